"""Several cached feature vectors of each image side by side (e.g. Lite0, Lite1 and Lite2 pooled features,
one network at two input sizes, or a network's features and Fisher vectors of SIFT):
is the concatenation better than each alone? A measurement, not a product feature yet.

Run by hand (not in CI) after extracting each part (`transfer extract --backbone B --layer avgpool --views V`;
the part `fisher` is `transfer fisher`'s default Fisher vectors, from its cached SIFT and encoder):

    python bench/concat.py --data ../shared/datasets/15scene --cache-dir /tmp/x18/cache \\
        efficientnet_lite0:10crops efficientnet_lite1:flip efficientnet_lite2:flip [fisher] [--json out.json]

Each part is L2-normalised on its own (so that no network dominates by its scale), the parts are
concatenated, and LinearSVC's C is chosen by 5-fold CV on the training split, as `transfer svm` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import grid_search, linear_svm
from transfer.data.datasets import load_dataset
from transfer.features.extract import load_layer
from transfer.features.spec import FeatureSpec


def _part(part: str, dataset, cache_dir: Path, layer_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (features, labels)} of one part."""
    if part == "fisher":
        from transfer.descriptors.fisher import fisher_features
        from transfer.descriptors.settings import FisherConfig

        return fisher_features(dataset, FisherConfig(), cache_dir).splits
    backbone, views, size = (part.split(":") + ["", ""])[:3]
    spec = FeatureSpec(backbone=backbone, layers=(layer_name,), views=views or "centre", image_size=int(size) if size else None)
    _, layer = load_layer(dataset, spec, cache_dir, layer_name)
    return {split: (layer.splits[split].features, layer.splits[split].labels) for split in ("train", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", help="BACKBONE[:VIEWS[:IMAGE_SIZE]], e.g. efficientnet_lite0:10crops")
    parser.add_argument("--data", default="data/15scene")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--layer", default="avgpool")
    parser.add_argument("--c-grid", default="0.1,1,10,100")
    parser.add_argument("--json")
    args = parser.parse_args()

    dataset = load_dataset(Path(args.data))
    blocks: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels = {}
    for part in args.parts:
        for split, (x, y) in _part(part, dataset, Path(args.cache_dir), args.layer).items():
            blocks[split].append(x / np.linalg.norm(x, axis=1, keepdims=True))
            labels[split] = y
    x = {split: np.hstack(blocks.pop(split)) for split in list(blocks)}
    grid = GridConfig(c_grid=tuple(float(c) for c in args.c_grid.split(",")), cv=5)
    result = grid_search(linear_svm("l2"), (x["train"], labels["train"]), (x["test"], labels["test"]), grid,
                         len(dataset.classes))
    figures = {"parts": args.parts, "features": x["train"].shape[1], "c_grid": result.grid, "cv": result.cv_mean,
               "test": result.test_per_setting, "chosen_c": result.chosen, "test_accuracy": result.test_accuracy}
    print(f"{' + '.join(args.parts)} ({figures['features']} features)")
    for c, cv, test in zip(result.grid, result.cv_mean, result.test_per_setting):
        print(f"  C={c:<6g} CV {100 * cv:.2f}%  test {100 * test:.2f}%" + ("  ← chosen by CV" if c == result.chosen else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
