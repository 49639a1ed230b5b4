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

import transfer.classifiers.training as training
from features import add_feature_options, cached_layer
from transfer.classifiers.heads import HeadSpec, train_head
from transfer.classifiers.training import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_options(parser, backbone="efficientnet_lite0", layer="conv_head")
    parser.add_argument("--head", default="mlp:1024,1024")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    data = cached_layer(args)
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
