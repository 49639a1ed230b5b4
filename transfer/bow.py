"""Bag-of-words + dense SIFT baseline (Lazebnik et al. 2006), cached stage by stage.

Stages and their caches under ``<cache>/bow/``, each named by a digest of what it depends on:

1. dense SIFT descriptors (uint8) and their keypoint positions, per image   ``sift-<digest>.h5``
2. a visual vocabulary: MiniBatchKMeans on a sample of training descriptors ``vocab-<digest>.skops``
3. the word of every descriptor                                             ``words-<digest>.h5``

Every array is checksummed (Fletcher-32) and every file is verified as it is read: a damaged stage
file is moved aside and that stage is computed again.

Histograms (with or without a spatial pyramid) are rebuilt from stage 3 with one ``bincount``
in well under a second, so changing only the pyramid or C reuses stages 1–3 and stores nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import h5py
import numpy as np
from scipy import sparse
from sklearn.kernel_approximation import AdditiveChi2Sampler

from .cache import FeatureCache, open_h5, reading, recover
from .console import console, progress_bar, warn
from .datasets import SPLITS, ImageDataset
from .errors import DamagedFile, UserError
from .images import UnreadableImage, read_gray
from .config import require
from .keys import KeyKind, content_key
from .modelfile import MODEL_SUFFIX, load_estimator, save_estimator

IMAGES_PER_TASK = 32
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class SiftConfig:
    step: int = 4  # grid spacing in pixels
    sizes: tuple[float, ...] = (2.7, 4.5)  # OpenCV keypoint sizes; a descriptor spans ~6× size (2.7 ≈ 16 px)
    max_side: int = 300  # larger images are downscaled first

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(self.sizes))
        require(self.step >= 1, "step", f"step must be at least 1, got {self.step}")
        require(bool(self.sizes) and min(self.sizes) > 0, "sizes", f"sizes must be positive numbers, got {list(self.sizes)}")
        require(self.max_side >= 16, "max_side", f"max_side must be at least 16, got {self.max_side}")


@dataclass(frozen=True, kw_only=True)
class VocabularyConfig:
    words: int = 1000
    sample: int = 100_000  # training descriptors drawn for k-means
    epochs: int = 10  # passes of mini-batch k-means over the sample
    seed: int = 0

    def __post_init__(self) -> None:
        # Words are stored as uint16.
        require(2 <= self.words <= 65535, "words", f"words must be between 2 and 65535, got {self.words}")
        require(self.sample >= self.words, "sample",
                f"sample must be at least words ({self.words}): k-means needs a descriptor per word, got {self.sample}")
        require(self.epochs >= 1, "epochs", f"epochs must be at least 1, got {self.epochs}")


# ----------------------------------------------------------------------------- stage 1: SIFT

def dense_sift(path: Path, config: SiftConfig) -> tuple[np.ndarray, np.ndarray]:
    """(descriptors uint8 N×128, positions float32 N×2 in [0, 1)); `UnreadableImage` for an image that
    cannot be read or is too small to hold one descriptor."""
    import cv2

    gray = read_gray(path)
    height, width = gray.shape
    scale = min(1.0, config.max_side / max(height, width))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        height, width = gray.shape
    start = config.step / 2
    ys, xs = np.meshgrid(np.arange(start, height, config.step), np.arange(start, width, config.step), indexing="ij")
    keypoints = [cv2.KeyPoint(float(x), float(y), size) for size in config.sizes for y, x in zip(ys.ravel(), xs.ravel())]
    if keypoints:
        keypoints, descriptors = cv2.SIFT_create().compute(gray, keypoints)  # may drop some near the border
    if not keypoints or descriptors is None:
        raise UnreadableImage(f"too small for dense SIFT ({width}×{height} pixels, grid step {config.step})")
    positions = np.array([(kp.pt[0] / width, kp.pt[1] / height) for kp in keypoints], dtype=np.float32)
    return np.clip(np.rint(descriptors), 0, 255).astype(np.uint8), positions


def _sift_or_reason(path: Path, config: SiftConfig) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        return dense_sift(path, config)
    except UnreadableImage as error:
        return str(error)


def _sift_task(paths: list[Path], config: SiftConfig) -> list:
    import cv2

    cv2.setNumThreads(1)  # the parallelism is across images
    return [_sift_or_reason(p, config) for p in paths]


def _append(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


def compute_descriptors(dataset: ImageDataset, config: SiftConfig, cache_dir: Path, jobs: int = -1) -> Path:
    """Stage 1, resumable: images are appended in batches and `images_done` advances after each flush."""
    from joblib import Parallel, delayed

    path = FeatureCache(cache_dir).artifact("bow", f"sift-{content_key(KeyKind.SIFT, dataset=dataset.fingerprint, sift=config)}.h5")
    if _finished(path, "images_done"):
        return path
    with open_h5(path, "a", "dense SIFT file") as h5:
        for split in SPLITS:
            samples = dataset.samples(split)
            group = h5.require_group(split)
            if "descriptors" not in group:
                checked = {"fletcher32": True}
                group.create_dataset("descriptors", (0, 128), np.uint8, maxshape=(None, 128), chunks=(16384, 128), **checked)
                group.create_dataset("positions", (0, 2), np.float32, maxshape=(None, 2), chunks=(16384, 2), **checked)
                group.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(4096,), **checked)
                group.create_dataset("valid", (0,), bool, maxshape=(None,), chunks=(4096,), **checked)
                group.create_dataset("labels", data=np.array([s.label for s in samples], np.int32), **checked)
                group.attrs["images_done"] = 0
                group.attrs["images"] = len(samples)
            done = int(group.attrs["images_done"])
            if done == len(samples):
                continue
            _trim(group, done)  # drop rows a killed run wrote past its last checkpoint
            paths = [dataset.path(s) for s in samples[done:]]
            tasks = [paths[i : i + IMAGES_PER_TASK] for i in range(0, len(paths), IMAGES_PER_TASK)]
            with progress_bar(len(paths), f"dense SIFT {split}") as advance:
                results = Parallel(n_jobs=jobs, return_as="generator")(delayed(_sift_task)(t, config) for t in tasks)
                for batch in results:
                    _write_sift_batch(group, batch, samples, done)
                    done += len(batch)
                    group.attrs["images_done"] = done
                    h5.flush()
                    advance(len(batch))
    return path


def _finished(path: Path, counter: str) -> bool:
    """True when every split of a stage file reached its total (read-only: a cached file stays untouched)."""
    if not path.exists():
        return False
    with reading(path, "BoW stage file") as h5:
        totals = {"images_done": "images", "rows_done": "rows"}
        return all(split in h5 and h5[split].attrs[counter] == h5[split].attrs[totals[counter]] for split in SPLITS)


def _trim(group: h5py.Group, images: int) -> None:
    rows = int(group["offsets"][images])
    group["offsets"].resize(images + 1, axis=0)
    group["valid"].resize(images, axis=0)
    for name in ("descriptors", "positions"):
        group[name].resize(rows, axis=0)


def _write_sift_batch(group: h5py.Group, batch: list, samples, first: int) -> None:
    empty = (np.zeros((0, 128), np.uint8), np.zeros((0, 2), np.float32))
    for i, item in enumerate(batch):
        if isinstance(item, str):
            warn(f"skipping unreadable image {samples[first + i].relpath}: {item}")
    items = [empty if isinstance(item, str) else item for item in batch]
    _append(group["descriptors"], np.concatenate([d for d, _ in items]))
    _append(group["positions"], np.concatenate([p for _, p in items]))
    ends = group["offsets"][-1] + np.cumsum([len(d) for d, _ in items])
    _append(group["offsets"], ends.astype(np.int64))
    _append(group["valid"], np.array([not isinstance(item, str) for item in batch]))


# ------------------------------------------------------------------------ stage 2: vocabulary

def training_sample(sift_path: Path, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` training descriptors (uint8) drawn without replacement, in file order; all when fewer."""
    with reading(sift_path, "dense SIFT file") as h5:
        descriptors = h5["train"]["descriptors"]
        total = descriptors.shape[0]
        return descriptors[:][np.sort(rng.choice(total, min(count, total), replace=False))]


def build_vocabulary(sift_path: Path, config: VocabularyConfig, cache_dir: Path):
    """Stage 2: MiniBatchKMeans on a seeded sample of training descriptors."""
    from sklearn.cluster import MiniBatchKMeans

    path = FeatureCache(cache_dir).artifact("bow", f"vocab-{content_key(KeyKind.VOCABULARY, sift=sift_path.name, vocabulary=config)}{MODEL_SUFFIX}")
    if path.exists():
        return load_estimator(path, "a BoW vocabulary"), path
    rng = np.random.default_rng(config.seed)
    sample = training_sample(sift_path, config.sample, rng).astype(np.float32)
    if len(sample) < config.words:
        raise UserError(f"only {len(sample)} training descriptors for {config.words} words; lower --words")
    batch = min(len(sample), max(10_000, 3 * config.words))
    kmeans = MiniBatchKMeans(config.words, batch_size=batch, n_init=1, random_state=config.seed)
    steps = config.epochs * int(np.ceil(len(sample) / batch))
    with progress_bar(steps, f"k-means {config.words} words", unit="batch") as advance:
        for epoch in range(config.epochs):
            order = rng.permutation(len(sample))
            for i in range(0, len(sample), batch):
                kmeans.partial_fit(sample[order[i : i + batch]])  # the first call seeds by k-means++
                advance()
    return kmeans, save_estimator(path, kmeans)


# ----------------------------------------------------------------------------- stage 3: words

ENCODE_ROWS = 100_000


def encode(sift_path: Path, kmeans, vocab_path: Path, cache_dir: Path) -> Path:
    """Stage 3, resumable by chunk: the nearest word of every descriptor."""
    path = FeatureCache(cache_dir).artifact("bow", f"words-{content_key(KeyKind.WORDS, sift=sift_path.name, vocab=vocab_path.name)}.h5")
    if _finished(path, "rows_done"):
        return path
    with reading(sift_path, "dense SIFT file") as sift, open_h5(path, "a", "BoW words file") as h5:
        for split in SPLITS:
            descriptors = sift[split]["descriptors"]
            total = descriptors.shape[0]
            if split not in h5:
                h5.create_dataset(split, (total,), np.uint16, chunks=(min(max(total, 1), ENCODE_ROWS),), fletcher32=True)
                h5[split].attrs["rows_done"] = 0
                h5[split].attrs["rows"] = total
            done = int(h5[split].attrs["rows_done"])
            with progress_bar(total - done, f"encode {split}", unit="desc") as advance:
                for start in range(done, total, ENCODE_ROWS):
                    stop = min(total, start + ENCODE_ROWS)
                    h5[split][start:stop] = kmeans.predict(descriptors[start:stop].astype(np.float32))
                    h5.flush()
                    h5[split].attrs["rows_done"] = stop
                    advance(stop - start)
    return path


# ------------------------------------------------------------------------ histograms (derived)

def pyramid_histograms(words: np.ndarray, positions: np.ndarray, offsets: np.ndarray, n_words: int, levels: int) -> np.ndarray:
    """Per image: concatenated L1-normalised histograms over 1, 2×2, … 2^L×2^L cells, with Lazebnik's
    level weights (1/2^L for level 0, 1/2^(L-l+1) for level l ≥ 1). Level 0 alone is the plain BoW."""
    images = len(offsets) - 1
    image_of = np.repeat(np.arange(images), np.diff(offsets))
    counts = np.maximum(np.diff(offsets), 1).astype(np.float32)
    blocks = []
    for level in range(levels + 1):
        cells = 2**level
        cx = np.minimum((positions[:, 0] * cells).astype(np.int64), cells - 1)
        cy = np.minimum((positions[:, 1] * cells).astype(np.int64), cells - 1)
        cell = cy * cells + cx
        flat = (image_of * cells * cells + cell) * n_words + words
        hist = np.bincount(flat, minlength=images * cells * cells * n_words).reshape(images, -1).astype(np.float32)
        weight = 1 / 2**levels if level == 0 else 1 / 2 ** (levels - level + 1)
        blocks.append(hist / counts[:, None] * (weight if levels else 1.0))
    return np.concatenate(blocks, axis=1)


def load_histograms(sift_path: Path, words_path: Path, n_words: int, levels: int, sqrt: bool):
    """{split: (histograms, labels)} over valid images."""
    out = {}
    with reading(sift_path, "dense SIFT file") as sift, reading(words_path, "BoW words file") as words:
        for split in SPLITS:
            group = sift[split]
            hist = pyramid_histograms(words[split][:].astype(np.int64), group["positions"][:], group["offsets"][:], n_words, levels)
            valid = group["valid"][:]
            hist = np.sqrt(hist) if sqrt else hist
            out[split] = (hist[valid], group["labels"][:][valid])
    return out


def readable_sift(paths: list[Path], config: SiftConfig) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Dense SIFT of new images (for `transfer predict`): (descriptors and positions of each readable
    image, readable mask over ``paths``)."""
    found = [_sift_or_reason(path, config) for path in paths]
    return [item for item in found if not isinstance(item, str)], np.array([not isinstance(item, str) for item in found])


def image_histograms(paths: list[Path], config: "BowConfig", kmeans) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of new images with a fitted vocabulary (for `transfer predict`); (histograms, readable mask)."""
    items, ok = readable_sift(paths, config.sift)
    if not items:
        return np.zeros((0, config.vocabulary.words)), ok
    words = kmeans.predict(np.concatenate([d for d, _ in items]).astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in items])])
    hist = pyramid_histograms(words.astype(np.int64), np.concatenate([p for _, p in items]), offsets,
                              config.vocabulary.words, config.pyramid)
    return (np.sqrt(hist) if config.sqrt else hist), ok


@dataclass(frozen=True, kw_only=True)
class BowConfig:
    sift: SiftConfig = SiftConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    pyramid: int = 0
    sqrt: bool = False

    def __post_init__(self) -> None:
        require(self.pyramid in (0, 1, 2, 3), "pyramid", f"pyramid must be 0, 1, 2 or 3, got {self.pyramid}")

    @classmethod
    def from_dict(cls, data: dict) -> "BowConfig":
        return cls(sift=SiftConfig(**data["sift"]), vocabulary=VocabularyConfig(**data["vocabulary"]),
                   pyramid=data["pyramid"], sqrt=data["sqrt"])


@dataclass
class BowFeatures:
    splits: dict[str, tuple[object, np.ndarray]]  # χ²-mapped histograms (sparse), labels
    kmeans: object
    feature_map: object  # the fitted, stateless AdditiveChi2Sampler
    timings: dict[str, float]


def bow_stages(stages: Callable[[], T]) -> T:
    """Run cached stages; a damaged stage file is moved aside and the stages run again (each damaged
    file once)."""
    damaged: set[Path] = set()
    while True:
        try:
            return stages()
        except DamagedFile as error:
            if error.path in damaged:
                raise
            damaged.add(error.path)
            recover(error)


def bow_features(dataset: ImageDataset, config: BowConfig, cache_dir: Path, jobs: int = -1) -> BowFeatures:
    """Stages 1–3 (each skipped when cached) and the histograms; timings of each stage in seconds."""
    return bow_stages(lambda: _bow_features(dataset, config, cache_dir, jobs))


def _bow_features(dataset: ImageDataset, config: BowConfig, cache_dir: Path, jobs: int) -> BowFeatures:
    timings = {}
    tick = time.perf_counter()
    sift_path = compute_descriptors(dataset, config.sift, cache_dir, jobs)
    timings["descriptors"] = time.perf_counter() - tick
    tick = time.perf_counter()
    kmeans, vocab_path = build_vocabulary(sift_path, config.vocabulary, cache_dir)
    timings["vocabulary"] = time.perf_counter() - tick
    tick = time.perf_counter()
    words_path = encode(sift_path, kmeans, vocab_path, cache_dir)
    timings["encoding"] = time.perf_counter() - tick
    tick = time.perf_counter()
    histograms = load_histograms(sift_path, words_path, config.vocabulary.words, config.pyramid, config.sqrt)
    # The additive χ² map is data-independent, so it is applied once here rather than inside every
    # CV fit; on sparse histograms that makes the pyramid's grid search several times faster.
    feature_map = AdditiveChi2Sampler(sample_steps=2).fit(histograms["train"][0])
    splits = {split: (feature_map.transform(sparse.csr_matrix(x)), y) for split, (x, y) in histograms.items()}
    timings["histograms"] = time.perf_counter() - tick
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return BowFeatures(splits, kmeans, feature_map, timings)
