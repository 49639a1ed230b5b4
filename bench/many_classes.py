"""How the BoW SVM grid's time grows with the number of classes, at the same number of training rows.

Caltech-101's shape (102 classes, 30 training images each: 3,060 rows) is not on this machine, so the
histograms are generated: each class draws its visual words from a mixture of one common distribution
and its own (``--share`` of the draws), at random positions, and goes through the study's pyramid (L2,
1,000 words: 21,000 values) and χ² map (63,000 values), then the BoW stage's C grid (5 C × 5 folds + a
final fit per C), in the training rows' span as `transfer bow` runs it, and with ``--baseline`` also
directly on the mapped features (sklearn's choice of solver), one after the other.

    .venv/bin/python bench/many_classes.py --classes 15,102 --json many-classes.json [--baseline]

Each class count gets ``--rows`` training rows in all (rows / classes per class) and 5/3 as many test
rows. Writes, per class count and path: seconds, chosen C, CV curve, test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import grid_search, plain_svm
from transfer.core.memory import keep_freed_memory, peak_rss_mb
from transfer.descriptors.bow import _chi2_map, pyramid_histograms

WORDS = 1000
DESCRIPTORS = 1200  # per image: a 200-pixel image's dense grid is 2,500 points at step 4; fewer keep generation short
BOW_C_GRID = (0.1, 0.3, 1, 3, 10)  # pipelines/fifteen_scene.toml's [bow]


def synthetic_histograms(classes: int, train_per_class: int, test_per_class: int, share: float, seed: int = 0):
    """{split: (pyramid histograms, labels)} of generated images."""
    rng = np.random.default_rng(seed)
    common = rng.dirichlet(np.full(WORDS, 0.5))
    own = rng.dirichlet(np.full(WORDS, 0.05), size=classes)
    out = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(classes), per_class)
        words = np.concatenate([rng.choice(WORDS, DESCRIPTORS, p=(1 - share) * common + share * own[c]) for c in labels])
        positions = rng.random((len(words), 2)).astype(np.float32)
        offsets = np.arange(len(labels) + 1) * DESCRIPTORS
        out[split] = (pyramid_histograms(words, positions, offsets, WORDS, levels=2), labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="15,102", help="comma-separated class counts")
    parser.add_argument("--rows", type=int, default=3060, help="training rows in all, for every class count")
    parser.add_argument("--share", type=float, default=0.03, help="fraction of an image's words drawn from its class's own distribution")
    parser.add_argument("--baseline", action="store_true", help="also fit directly on the mapped features (slow)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    keep_freed_memory()  # as `transfer run` does

    figures: dict = {"rows": args.rows, "share": args.share, "cores": os.cpu_count(), "c_grid": list(BOW_C_GRID), "runs": []}
    for classes in (int(v) for v in args.classes.split(",")):
        per_class = args.rows // classes
        splits, _ = _chi2_map(synthetic_histograms(classes, per_class, round(per_class * 5 / 3), args.share))
        grid = GridConfig(c_grid=BOW_C_GRID)
        for path, in_span in (("span", True), *((("direct", False),) if args.baseline else ())):
            begun = time.perf_counter()
            result = grid_search(plain_svm, splits["train"], splits["test"], grid, classes, in_span=in_span)
            run = {"classes": classes, "path": path, "train": list(splits["train"][0].shape),
                   "seconds": time.perf_counter() - begun, "chosen_c": result.chosen, "cv_mean": result.cv_mean,
                   "test_accuracy": result.test_accuracy}
            figures["runs"].append(run)
            print(json.dumps(run), flush=True)
    figures["peak_rss_mb"] = peak_rss_mb()
    args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
