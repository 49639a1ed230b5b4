"""One study run by several revisions of `transfer`, in turns, each from a fresh cache: a study's time before
and after a change, measured in one run on one machine (these virtual machines drift 10-20% over minutes,
so each revision runs once per round and the figures are medians).

    .venv/bin/python bench/versions.py pipelines/fifteen_scene_lite0.toml --data ../shared/datasets/15scene \\
        --only svm --revisions f204dea,. --rounds 2

A revision is anything `git worktree add` takes, or ``.`` for this checkout as it is (uncommitted changes
included). Each runs its own copy of the study file through its own CLI (``transfer run STUDY --only …``),
with this environment's Python and libraries. Prints, per run, the seconds, the child's peak resident
memory and the stage lines of its output; then a table of medians.

Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "from transfer.cli.main import app; app()"


def _tree(revision: str, scratch: Path) -> Path:
    if revision == ".":
        return ROOT
    tree = scratch / f"tree-{revision.replace('/', '_')}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), revision],
                   check=True, capture_output=True)
    return tree


def _run(tree: Path, study: Path, data: Path, only: str, folder: Path) -> tuple[float, float, str]:
    """(seconds, peak resident MiB, the output's last lines) of one `transfer run` by the package in ``tree``,
    in ``folder`` (its cache and anything else it writes)."""
    command = [sys.executable, "-c", CLI, "run", str(tree / study), "--data", str(data.resolve()),
               "--cache-dir", str(folder / "cache"), "--only", only, "--wide"]
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    folder.mkdir(parents=True)
    begun = time.perf_counter()
    child = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - begun
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: transfer run failed:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, "\n".join(output.rstrip().splitlines()[-8:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the study file, relative to the repository root")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--only", default="svm", help="the stages to run, as `transfer run --only` takes them")
    parser.add_argument("--revisions", default="HEAD,.", help="comma-separated; '.' is this checkout as it is")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    revisions = args.revisions.split(",")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; study {args.study} --only {args.only}")
    runs: dict[str, list[tuple[float, float]]] = {revision: [] for revision in revisions}
    with tempfile.TemporaryDirectory(prefix="transfer-versions-") as folder:
        scratch = Path(folder)
        trees = {revision: _tree(revision, scratch) for revision in revisions}
        try:
            for round_ in range(1, args.rounds + 1):
                for revision in revisions:
                    run = scratch / f"{revision.replace('/', '_')}-{round_}"
                    seconds, peak, tail = _run(trees[revision], args.study, args.data, args.only, run)
                    runs[revision].append((seconds, peak))
                    print(f"round {round_}, {revision}: {seconds:.1f} s, peak {peak:.0f} MiB\n{tail}\n", flush=True)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"| revision | seconds (median of {args.rounds}) | each | peak MiB |\n| --- | --- | --- | --- |")
    for revision, measured in runs.items():
        each = ", ".join(f"{seconds:.1f}" for seconds, _ in measured)
        print(f"| {revision} | {statistics.median(s for s, _ in measured):.1f} | {each} | {max(p for _, p in measured):.0f} |")


if __name__ == "__main__":
    main()
