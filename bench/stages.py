"""Wall time of each stage of the Lite0 study, computed from nothing (a fresh cache), and the peak
memory of a full VGG16 pool5 extraction (25,088 floats per image, every image).

    python bench/stages.py --data ../shared/datasets/15scene --json bench/stages.json

Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transfer.core.choices import StageKind
from transfer.runs.store import ResultsStore
from transfer.study.plan import Overrides, open_dataset, plan_stages, run_stages, select
from transfer.study.schema import load_study

BOW_STAGES = ("vocabulary", "encoding", "histograms", "kernel_map", "fit_seconds")


def study_stages(study_file: Path, data: Path, cache: Path, reports: Path, kinds: list[str]) -> dict:
    study = load_study(study_file)
    dataset = open_dataset(study, Overrides(data=data), fetch_missing=False)
    begun = time.perf_counter()
    reports_ = run_stages(select(plan_stages(study, dataset, cache, Overrides(data=data), reports), kinds))
    figures = {"total_seconds": time.perf_counter() - begun,
               "stages": {r.stage.name: {"status": r.status, "seconds": r.seconds, "result": r.detail} for r in reports_}}
    for run in ResultsStore(cache / "results.sqlite").runs(method="bow"):
        figures["stages"][f"bow L{run.config['pyramid']}"]["parts"] = {k: run.timings.get(k) for k in BOW_STAGES}
    return figures


def pool5_peak(data: Path, cache: Path) -> dict:
    """A separate process, so that its peak resident memory is its own (the largest of it and its loader workers)."""
    command = [sys.executable, "-m", "transfer.cli.main", "extract", "--data", str(data), "--layer", "pool5",
               "--weights", "random", "--cache-dir", str(cache)]
    begun = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "150"})
    return {"seconds": time.perf_counter() - begun,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/15scene"))
    parser.add_argument("--study", type=Path, default=Path("pipelines/fifteen_scene_lite0.toml"))
    parser.add_argument("--no-pool5", action="store_true", help="skip the VGG16 pool5 extraction (about 6 minutes on 2 cores)")
    parser.add_argument("--kinds", default="extract,svm,bow,head,report",
                        help=f"stage kinds to run, of {','.join(StageKind)} (scratch: `transfer scratch --ladder` times it)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_pool5:  # first: the study's own child processes would count in RUSAGE_CHILDREN
            figures["pool5_extraction"] = pool5_peak(args.data, Path(tmp) / "pool5")
        figures["study"] = study_stages(args.study, args.data, Path(tmp) / "cache", Path(tmp) / "reports",
                                        args.kinds.split(","))
    print(f"{'stage':40} {'status':8} {'seconds':>8}  result")
    for name, stage in figures["study"]["stages"].items():
        print(f"{name:40} {stage['status']:8} {stage['seconds']:8.1f}  {stage['result']}")
        for part, seconds in (stage.get("parts") or {}).items():
            print(f"{'  ' + part:40} {'':8} {seconds:8.1f}")
    print(f"{'study total':40} {'':8} {figures['study']['total_seconds']:8.1f}")
    if "pool5_extraction" in figures:
        pool5 = figures["pool5_extraction"]
        print(f"pool5, all images: {pool5['seconds']:.1f} s, peak RSS {pool5['peak_rss_mb']:,.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
