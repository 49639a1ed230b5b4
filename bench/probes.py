"""The probes' searches on one cached layer, side by side in one run, and a whole few-shot curve.

    .venv/bin/python bench/probes.py --data ../shared/datasets/15scene --json probes-lite0.json

On the full training split: the SVM's and logistic regression's C grids and k-NN's k × T grid (each by
5-fold CV, then the test split), ``--rounds`` times in turns (these machines drift, so medians); then the
few-shot curve (``--shots`` × ``--seeds`` × svm, logreg, knn) into a fresh store, with each probe's seconds.
Prints the CPU, each figure and its target; writes them all to ``--json``. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from features import add_feature_options, cached_layer
from transfer.classifiers.probes import search_of
from transfer.classifiers.settings import FewShotConfig, GridConfig, KnnGrid
from transfer.core.choices import Norm, Probe
from transfer.data.datasets import load_dataset
from transfer.features.spec import FeatureSpec
from transfer.runs.fewshot import run_fewshot
from transfer.runs.store import ResultsStore

# The targets of issue 36, on a 2-core machine.
KNN_SECONDS = 2.0
LOGREG_OVER_SVM = 2.0
CURVE_SECONDS = 60.0
CURVE_PROBES = (Probe.SVM, Probe.LOGREG, Probe.KNN)


def cpu() -> str:
    """The CPU's model and whether it computes bf16 natively (speeds depend on both)."""
    model, flags = "unknown CPU", ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and model == "unknown CPU":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = line
    extensions = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {name}" in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(extensions)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_options(parser, backbone="efficientnet_lite0", layer="avgpool")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shots", default=",".join(map(str, FewShotConfig.shots)))
    parser.add_argument("--seeds", type=int, default=FewShotConfig.seeds)
    args = parser.parse_args()

    data = cached_layer(args)
    train, test = data.splits["train"], data.splits["test"]
    grid = GridConfig()
    figures: dict = {"cpu": cpu(), "features": list(train.features.shape), "layer": f"{args.backbone} {args.layer}"}
    print(figures["cpu"], f"| train {train.features.shape[0]} × {train.features.shape[1]}", flush=True)
    seconds: dict[str, list[float]] = {str(probe): [] for probe in Probe}
    for _ in range(args.rounds):
        for probe in Probe:
            begun = time.perf_counter()
            _, result, _ = search_of(probe, (Norm.L2,), KnnGrid(), len(data.classes)).grid(
                (train.features, train.labels), (test.features, test.labels), grid, len(data.classes))
            seconds[str(probe)].append(time.perf_counter() - begun)
            figures.setdefault("full", {})[str(probe)] = {"chosen": str(result.chosen), "test_accuracy": result.test_accuracy,
                                                          "cv_best": max(result.cv_mean)}
    for probe in Probe:
        figures["full"][str(probe)]["seconds"] = seconds[str(probe)]
        median = statistics.median(seconds[str(probe)])
        print(f"{probe:>6}: {median:6.2f} s median ({', '.join(f'{s:.2f}' for s in seconds[str(probe)])}), chose "
              f"{figures['full'][str(probe)]['chosen']}, test {100 * figures['full'][str(probe)]['test_accuracy']:.2f}%")
    ratio = statistics.median(seconds["logreg"]) / statistics.median(seconds["svm"])
    knn = statistics.median(seconds["knn"])
    figures["logreg_over_svm"], figures["knn_seconds"] = ratio, knn
    print(f"k-NN's CV over {len(KnnGrid().k_grid)} k × {len(KnnGrid().temperatures)} T: {knn:.2f} s (target ≤ {KNN_SECONDS:g} s)")
    print(f"logistic regression / SVM grid: {ratio:.2f}× (target ≤ {LOGREG_OVER_SVM:g}×)")

    curve = FewShotConfig(shots=tuple(int(n) for n in args.shots.split(",")), seeds=args.seeds)
    with tempfile.TemporaryDirectory() as scratch:
        begun = time.perf_counter()
        curves = run_fewshot(load_dataset(args.data), FeatureSpec(backbone=args.backbone, weights=args.weights,
                                                                  layers=(args.layer,)),
                             args.cache_dir, grid, curve, CURVE_PROBES, store=ResultsStore(Path(scratch) / "results.sqlite"))
        total = time.perf_counter() - begun
    figures["curve"] = {"shots": list(curve.shots), "seeds": curve.seeds, "seconds": total,
                        "per_probe": {str(c.probe): c.seconds for c in curves}}
    print(f"few-shot curve, {len(curve.shots)} shot counts × {curve.seeds} seeds × {', '.join(CURVE_PROBES)}: {total:.1f} s "
          f"(target ≤ {CURVE_SECONDS:g} s); searches: "
          + ", ".join(f"{c.probe} {c.seconds:.1f} s" for c in curves))
    args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
