"""The linear-SVM C grid as before (LinearSVC on the d-dimensional features) and in the training rows' span
(`classifiers.SpanProjection`), on the same cached features, in one process, one after the other.

    .venv/bin/python bench/svm.py --data ../shared/datasets/15scene --backbone efficientnet_lite0 \\
        --layer conv_head --json svm-lite0.json
    .venv/bin/python bench/svm.py --data ../shared/datasets/15scene --backbone vgg16 --weights random \\
        --layer pool5 --json svm-vgg16.json

Writes, for `baseline` and `fast`: seconds, chosen_c, test_accuracy, cv_mean, test_accuracy_per_c; plus the
largest difference between the two chosen models' decision values on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from features import add_feature_options, cached_layer
from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import grid_search, linear_svm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_options(parser, backbone="vgg16", layer="pool5")
    parser.add_argument("--limit", type=int, default=0, help="at most N images per class and split (0: all)")
    parser.add_argument("--jobs", type=int, default=-1)
    args = parser.parse_args()

    data = cached_layer(args, args.limit)
    train, test = data.splits["train"], data.splits["test"]
    grid = GridConfig(jobs=args.jobs)
    figures: dict = {"features": {"train": list(train.features.shape), "test": list(test.features.shape)},
                     "layer": f"{args.backbone} {args.layer}", "cores": os.cpu_count(), "c_grid": list(grid.c_grid),
                     "cv": grid.cv}
    results = {}
    for name, in_span in (("baseline", False), ("fast", True)):
        begun = time.perf_counter()
        result = grid_search(linear_svm("l2"), (train.features, train.labels), (test.features, test.labels), grid,
                             len(data.classes), in_span=in_span)
        results[name] = result
        figures[name] = {"seconds": time.perf_counter() - begun, "chosen_c": result.chosen,
                         "test_accuracy": result.test_accuracy, "cv_mean": result.cv_mean,
                         "test_accuracy_per_c": result.test_per_setting}
        print(name, json.dumps(figures[name]), flush=True)
    difference = (results["baseline"].model.decision_function(test.features)
                  - results["fast"].model.decision_function(test.features))
    figures["max_decision_difference"] = float(np.abs(difference).max())
    figures["speedup"] = figures["baseline"]["seconds"] / figures["fast"]["seconds"]
    args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: figures[k] for k in ("speedup", "max_decision_difference")}))


if __name__ == "__main__":
    main()
