"""A whole study from a fresh cache, in a child process, stage by stage: where a user's time goes.

    .venv/bin/python bench/study.py pipelines/fifteen_scene_lite0.toml --data ../shared/datasets/15scene \\
        --json study-lite0.json
    .venv/bin/python bench/study.py pipelines/fifteen_scene.toml --data ../shared/datasets/15scene \\
        --weights random --json study-vgg16.json

Writes `stages` ({name, kind, status, seconds, detail} each: the detail is the stage's one-line result), `total_seconds`, `extract_seconds` (the extract
stages together), `other_seconds` and their ratio, and `peak_rss_mb` (the child's peak resident memory).
The cache is a new temporary folder, so nothing is reused from earlier runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path


def _run(study_file: str, data: str, weights: str | None, cache: str, reports: str, queue) -> None:
    from transfer.study.plan import Overrides, open_dataset, plan_stages, run_stages
    from transfer.study.schema import load_study

    study = load_study(Path(study_file))
    overrides = Overrides(Path(data), weights)
    dataset = open_dataset(study, overrides, fetch_missing=False)
    stages = plan_stages(study, dataset, Path(cache), overrides, Path(reports))
    run_stages(stages, on_end=lambda report: queue.put({"name": report.stage.name, "kind": str(report.stage.kind),
                                                         "status": str(report.status), "seconds": report.seconds,
                                                         "detail": report.detail}))
    queue.put(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", default=None, help="e.g. random: replaces the study's weights")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="transfer-bench-") as scratch:
        queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=_run, args=(str(args.study), str(args.data), args.weights, f"{scratch}/cache", f"{scratch}/reports", queue))
        begun = time.perf_counter()
        child.start()
        stages = []
        while (stage := queue.get()) is not None:
            stages.append(stage)
            print(json.dumps(stage), flush=True)
        total = time.perf_counter() - begun
        # The work is done; idle pools (joblib's workers wait minutes for more) need not be waited for.
        child.terminate()
        child.join()
    extract = sum(s["seconds"] for s in stages if s["kind"] == "extract")
    other = sum(s["seconds"] for s in stages if s["kind"] != "extract")
    figures = {"study": str(args.study), "stages": stages, "total_seconds": total, "extract_seconds": extract,
               "other_seconds": other, "other_per_extract": other / extract if extract else None,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
               "complete": all(s["status"] in ("ran", "cached") for s in stages)}
    args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "stages"}))


if __name__ == "__main__":
    main()
