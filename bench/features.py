"""What the benchmarks that start from cached features share: their options, and the features themselves
(extracted first when the cache does not hold them yet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from transfer.data.datasets import load_dataset
from transfer.features.cache import LayerFeatures
from transfer.features.extract import extract, load_layer
from transfer.features.spec import FeatureSpec, RunOptions


def add_feature_options(parser: argparse.ArgumentParser, backbone: str, layer: str, weights: str = "imagenet") -> None:
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default=backbone)
    parser.add_argument("--weights", default=weights)
    parser.add_argument("--layer", default=layer)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--json", type=Path, required=True)


def cached_layer(args: argparse.Namespace, limit: int = 0) -> LayerFeatures:
    """The layer's features for the data set (at most ``limit`` images per class and split when > 0)."""
    dataset = load_dataset(args.data)
    if limit:
        dataset = dataset.limited(limit)
    features = FeatureSpec(backbone=args.backbone, weights=args.weights, layers=(args.layer,))
    extract(dataset, features, args.cache_dir, RunOptions(progress=False))
    return load_layer(dataset, features, args.cache_dir, args.layer)[1]
