"""Fisher vector encoding per image: the mixture's posteriors from scikit-learn (`predict_proba`, float64)
against `transfer.fisher.posteriors` (float32), side by side in one process on the same images.

Run by hand (not in CI) after `transfer fisher` has cached the encoder:

    python bench/fisher.py --data ../shared/datasets/15scene --cache-dir cache [--images 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import transfer.descriptors.fisher as fisher
from transfer.data.datasets import load_dataset
from transfer.descriptors.bow import dense_sift
from transfer.descriptors.fisher import fisher_vector, fit_encoder
from transfer.descriptors.settings import FisherConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/15scene")
    parser.add_argument("--cache-dir", default="cache")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    config = FisherConfig()
    dataset = load_dataset(Path(args.data))
    encoder, _ = fit_encoder(dataset, config, Path(args.cache_dir))
    images = [dense_sift(dataset.path(s), config.sift) for s in dataset.samples("train")[: args.images]]
    own = fisher.posteriors
    ways = {"sklearn predict_proba": lambda x, gmm: gmm.predict_proba(x).astype(np.float32), "own float32": own}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    vectors = {}
    for _ in range(args.rounds):  # alternating, so that drift hits both alike
        for name, way in ways.items():
            fisher.posteriors = way
            begun = time.perf_counter()
            vectors[name] = np.stack([fisher_vector(d, p, encoder, config.pyramid) for d, p in images])
            seconds[name].append(time.perf_counter() - begun)
    fisher.posteriors = own
    figures = {name: {"ms_per_image": 1000 * float(np.median(s)) / len(images)} for name, s in seconds.items()}
    figures["speedup"] = figures["sklearn predict_proba"]["ms_per_image"] / figures["own float32"]["ms_per_image"]
    figures["max_abs_difference"] = float(np.abs(vectors["own float32"] - vectors["sklearn predict_proba"]).max())
    for name in ways:
        print(f"{name:>22}: {figures[name]['ms_per_image']:.2f} ms per image (median of {args.rounds} rounds, {len(images)} images)")
    print(f"speed-up {figures['speedup']:.2f}×, max |difference| of the vectors {figures['max_abs_difference']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
