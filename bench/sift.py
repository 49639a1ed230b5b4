"""Dense SIFT per image: OpenCV's `SIFT.compute` on a grid of keypoints (what `transfer bow` used before)
against `transfer.bow.dense_sift` (every grid point from one set of filtered orientation maps), side by
side in one process on the same images, one thread each (the SIFT stage runs one image per core).

Run by hand (not in CI):

    python bench/sift.py --data ../shared/datasets/15scene [--images 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from transfer.data.datasets import load_dataset
from transfer.data.images import read_gray
from transfer.descriptors.bow import dense_sift
from transfer.descriptors.settings import SiftConfig


def opencv_sift(path: Path, config: SiftConfig) -> np.ndarray:
    gray = read_gray(path)
    start = config.step / 2
    ys, xs = np.meshgrid(np.arange(start, gray.shape[0], config.step), np.arange(start, gray.shape[1], config.step), indexing="ij")
    keypoints = [cv2.KeyPoint(float(x), float(y), size) for size in config.sizes for y, x in zip(ys.ravel(), xs.ravel())]
    return cv2.SIFT_create().compute(gray, keypoints)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/15scene")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    threadpool_limits(1)  # as in the SIFT stage's workers: one image per core
    dataset = load_dataset(Path(args.data))
    samples = dataset.samples("train")
    paths = [dataset.path(s) for s in samples[:: max(1, len(samples) // args.images)][: args.images]]
    config = SiftConfig(contrast=0)  # the descriptors themselves; contrast scaling is the same step in both
    ways = {"opencv keypoints": lambda p: opencv_sift(p, config), "own dense": lambda p: dense_sift(p, config)[0]}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    descriptors = {}
    for _ in range(args.rounds):  # alternating, so that drift hits both alike
        for name, way in ways.items():
            begun = time.perf_counter()
            descriptors[name] = [way(p).astype(np.float32) for p in paths]
            seconds[name].append(time.perf_counter() - begun)
    a, b = (np.concatenate(descriptors[name]) for name in ways)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
    figures = {name: {"ms_per_image": 1000 * float(np.median(s)) / len(paths)} for name, s in seconds.items()}
    figures["speedup"] = figures["opencv keypoints"]["ms_per_image"] / figures["own dense"]["ms_per_image"]
    figures["cosine_median"], figures["cosine_p5"] = float(np.median(cosine)), float(np.percentile(cosine, 5))
    for name in ways:
        print(f"{name:>16}: {figures[name]['ms_per_image']:.2f} ms per image (median of {args.rounds} rounds, {len(paths)} images)")
    print(f"speed-up {figures['speedup']:.2f}×; cosine of the two descriptors of each point: median "
          f"{figures['cosine_median']:.4f}, 5th percentile {figures['cosine_p5']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
