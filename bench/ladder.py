"""The from-scratch ladder in fp32 and in the precision `auto` picks, in one process, on the same images.

Run by hand (not in CI); figures go to the README's measured notes:

    python bench/ladder.py --data ../shared/datasets/15scene [--json out.json]

Per step: best epoch, validation and test accuracy, and the mean seconds of one epoch (training plus the
two evaluations), for each precision; then the per-epoch speed-up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from transfer.classifiers.scratch import ScratchConfig, ladder, load_images
from transfer.classifiers.training import Compute
from transfer.data.datasets import load_dataset
from transfer.runs.jobs import run_scratch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/15scene")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--json")
    args = parser.parse_args()

    images = load_images(load_dataset(Path(args.data)), args.size)
    steps = ladder(ScratchConfig(size=args.size))
    figures: dict[str, list[dict]] = {}
    for compute in (Compute(device="cpu", precision="fp32"), Compute.resolve("cpu", "auto")):
        with tempfile.TemporaryDirectory() as cache:  # a fresh cache: nothing resumes from a checkpoint
            outcomes = run_scratch(images, steps, "ladder", Path(cache), compute=compute)
        figures[compute.precision] = [
            {"step": o.step, "best_epoch": o.trained.result.best_epoch, "val_accuracy": o.trained.result.best_val_accuracy,
             "test_accuracy": o.trained.result.test_accuracy, "epochs": len(o.trained.result.curves["epoch_seconds"]),
             "epoch_seconds": o.trained.result.epoch_seconds} for o in outcomes]
    print(f"{'step':<20}" + "".join(f"{p + ' test %':>14}{p + ' s/epoch':>14}" for p in figures) + f"{'speed-up':>10}")
    precisions = list(figures)
    for i, (step, _) in enumerate(steps):
        rows = [figures[p][i] for p in precisions]
        print(f"{step:<20}" + "".join(f"{100 * r['test_accuracy']:>14.2f}{r['epoch_seconds']:>14.3f}" for r in rows)
              + f"{rows[0]['epoch_seconds'] / rows[-1]['epoch_seconds']:>9.2f}×")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
