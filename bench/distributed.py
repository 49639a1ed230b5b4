"""Extraction speed of the two engines on one data set, from fresh caches, in one run (these machines
drift: compare within a run): the local engine, then Ray with 1 and with 2 actors, in turn.

    .venv/bin/python bench/distributed.py --data ../shared/datasets/15scene --backbone efficientnet_lite0 \\
        --layer avgpool [--rounds 1] [--json FILE]

images/s counts the network passes as `transfer extract` reports them; wall seconds include starting
the local Ray cluster and its actors. Features are compared with the local engine's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from transfer.data.datasets import load_dataset
from transfer.features.cache import read_features
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--layer", default="avgpool")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    spec = FeatureSpec(backbone=args.backbone, weights=args.weights, layers=(args.layer,), precision=args.precision)
    engines = {"local": RunOptions(batch_size=args.batch_size, progress=False),
               "ray, 1 actor": RunOptions(batch_size=args.batch_size, progress=False, engine="ray", actors=1),
               "ray, 2 actors": RunOptions(batch_size=args.batch_size, progress=False, engine="ray", actors=2)}
    results: dict[str, list[dict]] = {name: [] for name in engines}
    reference = None
    for round_ in range(args.rounds):
        for name, options in engines.items():
            with tempfile.TemporaryDirectory() as cache:
                begun = time.perf_counter()
                outcome = extract(dataset, spec, Path(cache), options)
                wall = time.perf_counter() - begun
                features = np.concatenate([s.features for s in read_features(outcome.path, args.layer, dataset).splits.values()])
            reference = features if reference is None else reference
            row = {"images": outcome.images, "images_per_s": outcome.images_per_s, "wall_seconds": wall,
                   "max_abs_difference_to_local": float(np.abs(features - reference).max())}
            results[name].append(row)
            print(f"round {round_ + 1} {name}: {outcome.images} images, {outcome.images_per_s:.1f} images/s, "
                  f"{wall:.1f} s wall, max |difference to local| {row['max_abs_difference_to_local']:.3g}", flush=True)
    summary = {name: {key: float(np.median([r[key] for r in rows])) for key in rows[0]} for name, rows in results.items()}
    local = summary["local"]["images_per_s"]
    print(f"{'engine':14s} {'images/s':>9s} {'× local':>8s} {'wall s':>7s}")
    for name, row in summary.items():
        print(f"{name:14s} {row['images_per_s']:9.1f} {row['images_per_s'] / local:8.2f} {row['wall_seconds']:7.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": results, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
