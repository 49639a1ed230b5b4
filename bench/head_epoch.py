"""One epoch of frozen-backbone head training: from cached features vs through the images (the study's way).

Run by hand (not in CI), in one process so both are measured on the same machine state:

    python bench/head_epoch.py --data ../shared/datasets/15scene --weights random [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from transfer.classifiers.heads import HeadSpec
from transfer.data.datasets import load_dataset
from transfer.features.backbones import Weights, build_model, feature_extractor
from transfer.features.cache import read_features
from transfer.features.extract import extract, resolve
from transfer.features.forward import Reduction, make_loader, network_batches
from transfer.features.registry import get_backbone
from transfer.features.spec import FeatureSpec, RunOptions


def one_epoch(head, optimizer, batches) -> None:
    head.train()
    for x, y in batches:
        loss = F.cross_entropy(head(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/15scene")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cached-epochs", type=int, default=20)
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--json")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    spec = FeatureSpec(weights=args.weights, layers=("relu7",))
    outcome = extract(dataset, spec, Path(args.cache_dir), RunOptions())  # no-op when cached
    train = read_features(outcome.path, "relu7", dataset).splits["train"]
    n_classes = len(dataset.classes)
    x, y = torch.as_tensor(train.features), torch.as_tensor(train.labels, dtype=torch.long)

    torch.manual_seed(0)
    head = HeadSpec.parse("fc", n_classes).build(x.shape[1], n_classes)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    begun = time.perf_counter()
    for _ in range(args.cached_epochs):
        order = torch.randperm(len(y))
        one_epoch(head, optimizer, ((x[order[i:i + args.batch_size]], y[order[i:i + args.batch_size]])
                                    for i in range(0, len(y), args.batch_size)))
    cached = (time.perf_counter() - begun) / args.cached_epochs

    resolved = resolve(spec, Path(args.cache_dir))
    backbone = get_backbone("vgg16")
    extractor = feature_extractor(build_model(backbone, Weights.parse(args.weights)), [backbone.taps.layers["relu7"].node])
    extractor = extractor.to(memory_format=torch.channels_last)
    paths = [dataset.path(s) for s in dataset.samples("train")]
    loader = make_loader(paths, resolved.key.preprocessing, resolved.device, args.batch_size, None)
    nodes = {"relu7": backbone.taps.layers["relu7"].node}
    labels = iter(np.array_split(train.labels, range(args.batch_size, len(paths), args.batch_size)))
    begun = time.perf_counter()
    one_epoch(head, optimizer, ((torch.as_tensor(arrays["relu7"]), torch.as_tensor(next(labels), dtype=torch.long))
                                for arrays, _, _ in network_batches(extractor, loader, resolved.device,
                                                                    resolved.key.precision, nodes, Reduction())))
    through_images = time.perf_counter() - begun

    figures = {"images": len(paths), "precision": resolved.key.precision, "cached_epoch_s": cached,
               "image_epoch_s": through_images, "speedup": through_images / cached}
    print(f"fc{n_classes} head, {len(paths)} training images, VGG16 relu7 ({resolved.key.precision}):")
    print(f"  epoch from cached features : {cached * 1000:9.1f} ms (mean of {args.cached_epochs})")
    print(f"  epoch through the images   : {through_images * 1000:9.1f} ms")
    print(f"  cached path is {figures['speedup']:,.0f}× faster")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
