"""A large head trained with a checkpoint after every epoch against one at most every
`training.CHECKPOINT_SECONDS`, on the same cached features, in one process:

    .venv/bin/python bench/checkpoints.py --data ../shared/datasets/15scene --backbone efficientnet_lite0 \\
        --layer conv_head --head mlp:1024,1024 --epochs 4 --json checkpoints.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import transfer.training as training
from transfer.datasets import load_dataset
from transfer.extraction import FeatureSpec, RunOptions, extract, load_layer
from transfer.heads import HeadSpec, train_head
from transfer.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--layer", default="conv_head")
    parser.add_argument("--head", default="mlp:1024,1024")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    features = FeatureSpec(backbone=args.backbone, weights=args.weights, layers=(args.layer,))
    extract(dataset, features, args.cache_dir, RunOptions(progress=False))
    _, data = load_layer(dataset, features, args.cache_dir, args.layer)
    train, test = data.splits["train"], data.splits["test"]
    spec = HeadSpec.parse(args.head, len(data.classes))
    config = TrainConfig(epochs=args.epochs, patience=args.epochs)
    figures: dict = {"head": args.head, "features": list(train.features.shape), "epochs": args.epochs}
    default_interval = training.CHECKPOINT_SECONDS
    for name, interval in (("every epoch", 0.0), (f"at most every {default_interval:g} s", default_interval)):
        training.CHECKPOINT_SECONDS = interval
        with tempfile.TemporaryDirectory() as scratch:
            checkpoint = Path(scratch) / "head.pt"
            begun = time.perf_counter()
            result = train_head(spec, (train.features, train.labels), (test.features, test.labels), len(data.classes),
                                config, checkpoint, score_test=True)
            seconds = time.perf_counter() - begun
            figures[name] = {"seconds": seconds, "checkpoint_mb": checkpoint.stat().st_size / 2**20,
                             "test_accuracy": result.test_accuracy, "best_epoch": result.best_epoch}
        print(name, json.dumps(figures[name]), flush=True)
    args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
