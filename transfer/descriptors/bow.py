"""Bag-of-words + dense SIFT baseline (Lazebnik et al. 2006), cached stage by stage.

Stages and their caches under ``<cache>/bow/``, each named by a digest of what it depends on:

1. a visual vocabulary: MiniBatchKMeans on a sample of training descriptors ``vocab-<digest>.skops``
2. the word of every dense SIFT descriptor, with its position, per image    ``words-<digest>.h5``

Descriptors themselves are not stored: computing them (`dense_sift`) costs a few milliseconds per
image, while storing them took 128 bytes each, gigabytes for 15-Scene; each stage that needs them
computes them again, on every core. Every array is checksummed (Fletcher-32) and every file is
verified as it is read: a damaged stage file is moved aside and that stage is computed again.

Histograms (with or without a spatial pyramid) are rebuilt from stage 2 with one ``bincount``
in well under a second, so changing only the pyramid, the kernel or C reuses stages 1–2 and stores nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np
from scipy import sparse
from scipy.linalg import eigh  # LAPACK's syevr: faster than NumPy's eigh here (docs/measured-notes.md)
from sklearn.kernel_approximation import AdditiveChi2Sampler
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from transfer.classifiers.svm import with_weights
from transfer.core.archive import SKOPS_SUFFIX, load_estimator, save_estimator
from transfer.core.choices import Kernel
from transfer.core.console import console, progress_bar, warn
from transfer.core.errors import DamagedFile, UserError
from transfer.core.keys import KeyKind, content_key
from transfer.core.paths import CacheFolder
from transfer.data.datasets import SPLITS, ImageDataset
from transfer.data.images import UnreadableImage, read_gray
from transfer.descriptors.settings import BowConfig, SiftConfig, VocabularyConfig
from transfer.features.cache import open_h5, reading, recover

IMAGES_PER_TASK = 32
T = TypeVar("T")


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
    rows, cols = np.arange(start, height, config.step), np.arange(start, width, config.step)
    if not len(rows) or not len(cols):
        raise UnreadableImage(f"too small for dense SIFT ({width}×{height} pixels, grid step {config.step})")
    channels = orientation_channels(gray)
    descriptors = np.concatenate([grid_descriptors(channels, rows, cols, size) for size in config.sizes])
    ys, xs = np.meshgrid(rows, cols, indexing="ij")
    centres = np.tile(np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32), (len(config.sizes), 1))
    if config.contrast > 0:
        sizes = np.repeat(np.array(config.sizes, dtype=np.float32), ys.size)
        descriptors *= _contrast_scale(gray, centres, sizes, config.contrast)[:, None]
    positions = centres / np.array([width, height], dtype=np.float32)
    return np.clip(np.rint(descriptors), 0, 255).astype(np.uint8), positions


# Dense SIFT with OpenCV's conventions (its `SIFT.compute` on keypoints of a grid: smoothing, central
# differences, 8 orientations × 4×4 spatial bins of 1.5 × size pixels, linear interpolation between
# orientations and between bins, a Gaussian window of two bins, clipping at 0.2, scale 512), computed
# for every grid point at once: a bin's weight of a pixel (triangle × Gaussian) is a product of a row
# factor and a column factor, so all the bins of all the points come from two matrix products per
# size. OpenCV computes each keypoint's window on its own; this gives the same descriptors faster
# (`bench/sift.py` measures both, and how close they are).
SIFT_BINS = 4
SIFT_ORIENTATIONS = 8
SIFT_SMOOTHING = float(np.sqrt(1.6**2 - 0.5**2))  # OpenCV's base blur for an image assumed at σ 0.5


def orientation_channels(gray: np.ndarray) -> np.ndarray:
    """8 × H × W: each pixel's gradient magnitude split between its two nearest of 8 orientations."""
    import cv2

    image = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), SIFT_SMOOTHING)
    dx, dy = np.zeros_like(image), np.zeros_like(image)
    dx[:, 1:-1] = image[:, 2:] - image[:, :-2]
    dy[1:-1, :] = image[:-2, :] - image[2:, :]  # y points up, as in OpenCV
    magnitude, angle = cv2.cartToPolar(dx.ravel(), dy.ravel())
    angle = angle.ravel() * (SIFT_ORIENTATIONS / (2 * np.pi))
    lower = np.floor(angle)
    upper_share = magnitude.ravel() * (angle - lower)
    lower = lower.astype(np.int64) % SIFT_ORIENTATIONS
    pixels = np.arange(image.size)
    channels = np.zeros((SIFT_ORIENTATIONS, image.size), np.float32)
    channels[lower, pixels] = magnitude.ravel() - upper_share
    channels[(lower + 1) % SIFT_ORIENTATIONS, pixels] = upper_share
    return channels.reshape(SIFT_ORIENTATIONS, *image.shape)


def _bin_weights(centres: np.ndarray, length: int, bin_width: float) -> np.ndarray:
    """(bins · points) × length: along one axis, each spatial bin's weight of each pixel for each point,
    measured from the point rounded to a pixel as OpenCV does."""
    offsets = (np.arange(length)[None, :] - np.rint(centres)[:, None]) / bin_width  # in bins
    window = np.exp(-(offsets**2) / (2 * (SIFT_BINS / 2) ** 2))
    middle = (SIFT_BINS - 1) / 2
    return np.concatenate([np.maximum(0, 1 - np.abs(offsets - (i - middle))) * window for i in range(SIFT_BINS)]).astype(np.float32)


def grid_descriptors(channels: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: float) -> np.ndarray:
    """float32 descriptors (points row by row × 128, OpenCV's order: bin row, bin column, orientation)
    at every point of the grid rows × cols, for keypoints of ``size``."""
    orientations, height, width = channels.shape
    by_rows = _bin_weights(rows, height, 1.5 * size) @ channels.transpose(1, 0, 2).reshape(height, -1)
    binned = by_rows.reshape(-1, width) @ _bin_weights(cols, width, 1.5 * size).T
    binned = binned.reshape(SIFT_BINS, len(rows), orientations, SIFT_BINS, len(cols))
    descriptors = binned.transpose(1, 4, 0, 3, 2).reshape(len(rows) * len(cols), -1)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True) + 1e-7
    np.minimum(descriptors, 0.2, out=descriptors)
    descriptors *= 512 / (np.linalg.norm(descriptors, axis=1, keepdims=True) + 1e-7)
    return descriptors


def _contrast_scale(gray: np.ndarray, centres: np.ndarray, sizes: np.ndarray, threshold: float) -> np.ndarray:
    """min(1, mean gradient magnitude over each descriptor's window / threshold)."""
    import cv2

    image = gray.astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=1)) / 2
    rows = np.minimum(centres[:, 1].astype(np.int64), gray.shape[0] - 1)
    cols = np.minimum(centres[:, 0].astype(np.int64), gray.shape[1] - 1)
    scale = np.empty(len(centres), np.float32)
    for size in np.unique(sizes):
        side = max(1, round(6 * float(size)))  # the span of an OpenCV descriptor
        mean = cv2.boxFilter(magnitude, -1, (side, side), borderType=cv2.BORDER_REFLECT)
        chosen = sizes == size
        scale[chosen] = mean[rows[chosen], cols[chosen]]
    return np.minimum(1.0, scale / threshold)


def sift_or_reason(path: Path, config: SiftConfig) -> tuple[np.ndarray, np.ndarray] | str:
    try:
        return dense_sift(path, config)
    except UnreadableImage as error:
        return str(error)


def map_images(items: list, task: Callable[..., list], jobs: int, description: str, *args) -> Iterator[list]:
    """``task(batch, *args)`` over batches of ``items`` (images) on ``jobs`` cores, results in order, a
    batch at a time, with a progress bar counting items."""
    from joblib import Parallel, delayed

    batches = [items[i : i + IMAGES_PER_TASK] for i in range(0, len(items), IMAGES_PER_TASK)]
    with progress_bar(len(items), description) as advance:
        results = Parallel(n_jobs=jobs, return_as="generator")(delayed(task)(batch, *args) for batch in batches)
        for batch, result in zip(batches, results):
            yield result
            advance(len(batch))


def one_thread() -> None:
    import cv2

    cv2.setNumThreads(1)  # the parallelism is across images


def warn_unreadable(relpath: str, reason: str) -> None:
    warn(f"skipping unreadable image {relpath}: {reason}")


# ------------------------------------------------------------------------ stage 1: vocabulary

def _sample_task(items: list[tuple[int, Path]], config: SiftConfig, share: int, seed: int) -> list[np.ndarray]:
    one_thread()
    drawn = []
    for index, path in items:
        found = sift_or_reason(path, config)
        if isinstance(found, str):
            continue  # reported by the stages that encode every image
        rng = np.random.default_rng([seed, index])
        drawn.append(found[0][np.sort(rng.choice(len(found[0]), min(share, len(found[0])), replace=False))])
    return drawn


def training_sample(dataset: ImageDataset, config: SiftConfig, count: int, seed: int, jobs: int) -> np.ndarray:
    """``count`` training descriptors (uint8): an equal share from each readable training image (drawn
    with a seed per image, so the sample does not depend on the number of cores), then ``count`` of
    those at random; all when fewer. Computed, not read: dense SIFT costs milliseconds per image, and
    storing every descriptor took gigabytes."""
    samples = dataset.samples("train")
    share = -(-count // max(1, len(samples)))
    items = [(index, dataset.path(sample)) for index, sample in enumerate(samples)]
    drawn = [d for batch in map_images(items, _sample_task, jobs, "dense SIFT sample", config, share, seed) for d in batch]
    pool = np.concatenate(drawn) if drawn else np.zeros((0, 128), np.uint8)
    return pool[np.sort(np.random.default_rng(seed).choice(len(pool), min(count, len(pool)), replace=False))]


def build_vocabulary(dataset: ImageDataset, sift: SiftConfig, config: VocabularyConfig, cache_dir: Path, jobs: int = -1):
    """Stage 1: MiniBatchKMeans on a seeded sample of training descriptors."""
    from sklearn.cluster import MiniBatchKMeans

    key = content_key(KeyKind.VOCABULARY, dataset=dataset.fingerprint, sift=sift, vocabulary=config)
    path = CacheFolder(cache_dir).artifact("bow", f"vocab-{key}{SKOPS_SUFFIX}")
    if path.exists():
        return load_estimator(path, "a BoW vocabulary"), path
    rng = np.random.default_rng(config.seed)
    sample = training_sample(dataset, sift, config.sample, config.seed, jobs).astype(np.float32)
    if len(sample) < config.words:
        raise UserError(f"only {len(sample)} training descriptors for {config.words} words; lower --words")
    batch = min(len(sample), max(10_000, 3 * config.words))
    kmeans = MiniBatchKMeans(config.words, batch_size=batch, n_init=1, random_state=config.seed)
    steps = config.epochs * int(np.ceil(len(sample) / batch))
    with progress_bar(steps, f"k-means {config.words} words", unit="batch") as advance:
        for _ in range(config.epochs):
            order = rng.permutation(len(sample))
            for i in range(0, len(sample), batch):
                kmeans.partial_fit(sample[order[i : i + batch]])  # the first call seeds by k-means++
                advance()
    return kmeans, save_estimator(path, kmeans)


# ----------------------------------------------------------------------------- stage 2: words

def _words_task(paths: list[Path], config: SiftConfig, kmeans) -> list:
    """Per image: (words uint16, positions) or the reason it cannot be read. One `predict` call for the
    whole batch: each call sets up its thread pools, which costs more than a small image's words."""
    one_thread()
    found = [sift_or_reason(path, config) for path in paths]
    readable = [item for item in found if not isinstance(item, str)]
    if not readable:
        return found
    words = kmeans.predict(np.concatenate([descriptors for descriptors, _ in readable]).astype(np.float32)).astype(np.uint16)
    per_image = iter(np.split(words, np.cumsum([len(descriptors) for descriptors, _ in readable])[:-1]))
    return [item if isinstance(item, str) else (next(per_image), item[1]) for item in found]


def encode(dataset: ImageDataset, config: SiftConfig, kmeans, vocab_path: Path, cache_dir: Path, jobs: int = -1) -> Path:
    """Stage 2, resumable: dense SIFT of every image and the nearest word of each descriptor, kept with
    its position; images are appended in batches and `images_done` advances after each flush."""
    key = content_key(KeyKind.WORDS, dataset=dataset.fingerprint, sift=config, vocab=vocab_path.name)
    path = CacheFolder(cache_dir).artifact("bow", f"words-{key}.h5")
    if _finished(path):
        return path
    with open_h5(path, "a", "BoW words file") as h5:
        for split in SPLITS:
            samples = dataset.samples(split)
            group = h5.require_group(split)
            if "words" not in group:
                checked = {"fletcher32": True}
                group.create_dataset("words", (0,), np.uint16, maxshape=(None,), chunks=(65536,), **checked)
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
            for batch in map_images(paths, _words_task, jobs, f"dense SIFT + words {split}", config, kmeans):
                _write_words_batch(group, batch, samples, done)
                done += len(batch)
                group.attrs["images_done"] = done
                h5.flush()
    return path


def _append(dataset: h5py.Dataset, rows: np.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(rows), axis=0)
    dataset[start:] = rows


def _finished(path: Path) -> bool:
    """True when every split of the words file reached its total (read-only: a cached file stays untouched)."""
    if not path.exists():
        return False
    with reading(path, "BoW words file") as h5:
        return all(split in h5 and h5[split].attrs["images_done"] == h5[split].attrs["images"] for split in SPLITS)


def _trim(group: h5py.Group, images: int) -> None:
    rows = int(group["offsets"][images])
    group["offsets"].resize(images + 1, axis=0)
    group["valid"].resize(images, axis=0)
    for name in ("words", "positions"):
        group[name].resize(rows, axis=0)


def _write_words_batch(group: h5py.Group, batch: list, samples, first: int) -> None:
    empty = (np.zeros(0, np.uint16), np.zeros((0, 2), np.float32))
    for i, item in enumerate(batch):
        if isinstance(item, str):
            warn_unreadable(samples[first + i].relpath, item)
    items = [empty if isinstance(item, str) else item for item in batch]
    _append(group["words"], np.concatenate([w for w, _ in items]))
    _append(group["positions"], np.concatenate([p for _, p in items]))
    ends = group["offsets"][-1] + np.cumsum([len(w) for w, _ in items])
    _append(group["offsets"], ends.astype(np.int64))
    _append(group["valid"], np.array([not isinstance(item, str) for item in batch]))


# ------------------------------------------------------------------------ histograms (derived)

def pyramid_histograms(words: np.ndarray, positions: np.ndarray, offsets: np.ndarray, n_words: int, levels: int,
                       bands: bool = False) -> np.ndarray:
    """Per image: concatenated L1-normalised histograms over 1, 2×2, … 2^L×2^L cells, with Lazebnik's
    level weights (1/2^L for level 0, 1/2^(L-l+1) for level l ≥ 1). Level 0 alone is the plain BoW.
    ``bands`` appends 3 horizontal bands (top, middle, bottom: sky, buildings or trees, ground in a
    scene) weighted as level 1, the 3×1 regions of the Fisher-vector pyramid."""
    images = len(offsets) - 1
    image_of = np.repeat(np.arange(images), np.diff(offsets))
    counts = np.maximum(np.diff(offsets), 1).astype(np.float32)

    def histograms(columns: int, rows: int, weight: float) -> np.ndarray:
        cx = np.minimum((positions[:, 0] * columns).astype(np.int64), columns - 1)
        cy = np.minimum((positions[:, 1] * rows).astype(np.int64), rows - 1)
        flat = (image_of * columns * rows + cy * columns + cx) * n_words + words
        hist = np.bincount(flat, minlength=images * columns * rows * n_words).reshape(images, -1).astype(np.float32)
        return hist / counts[:, None] * weight

    weights = [1 / 2**levels if level == 0 else 1 / 2 ** (levels - level + 1) for level in range(levels + 1)] if levels else [1.0]
    blocks = [histograms(2**level, 2**level, weight) for level, weight in enumerate(weights)]
    if bands:
        blocks.append(histograms(1, 3, weights[1]))
    return np.concatenate(blocks, axis=1)


def bow_histograms(words: np.ndarray, positions: np.ndarray, offsets: np.ndarray, config: BowConfig) -> np.ndarray:
    """The histograms the SVM sees: the pyramid's (and bands'), square-rooted when ``config.sqrt``."""
    hist = pyramid_histograms(words, positions, offsets, config.vocabulary.words, config.pyramid, config.bands)
    return np.sqrt(hist) if config.sqrt else hist


def load_histograms(words_path: Path, config: BowConfig):
    """{split: (histograms, labels)} over valid images."""
    out = {}
    with reading(words_path, "BoW words file") as h5:
        for split in SPLITS:
            group = h5[split]
            hist = bow_histograms(group["words"][:].astype(np.int64), group["positions"][:], group["offsets"][:], config)
            valid = group["valid"][:]
            out[split] = (hist[valid], group["labels"][:][valid])
    return out


def readable_sift(paths: list[Path], config: SiftConfig) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Dense SIFT of new images (for `transfer predict`): (descriptors and positions of each readable
    image, readable mask over ``paths``)."""
    found = [sift_or_reason(path, config) for path in paths]
    return [item for item in found if not isinstance(item, str)], np.array([not isinstance(item, str) for item in found])


def image_histograms(paths: list[Path], config: BowConfig, kmeans) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of new images with a fitted vocabulary (for `transfer predict`); (histograms, readable mask)."""
    items, ok = readable_sift(paths, config.sift)
    if not items:
        return np.zeros((0, config.vocabulary.words)), ok
    words = kmeans.predict(np.concatenate([d for d, _ in items]).astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum([len(d) for d, _ in items])])
    return bow_histograms(words.astype(np.int64), np.concatenate([p for _, p in items]), offsets, config), ok


@dataclass
class BowFeatures:
    splits: dict[str, tuple[object, np.ndarray]]  # kernel-mapped histograms, labels
    kmeans: object
    model: Callable[[object], Pipeline]  # an SVM fitted on the mapped features → the model on histograms
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
    kmeans, vocab_path = build_vocabulary(dataset, config.sift, config.vocabulary, cache_dir, jobs)
    timings["vocabulary"] = time.perf_counter() - tick
    tick = time.perf_counter()
    words_path = encode(dataset, config.sift, kmeans, vocab_path, cache_dir, jobs)
    timings["encoding"] = time.perf_counter() - tick
    tick = time.perf_counter()
    histograms = load_histograms(words_path, config)
    timings["histograms"] = time.perf_counter() - tick
    tick = time.perf_counter()
    splits, model = (_chi2_map if config.kernel == Kernel.CHI2 else _intersection_map)(histograms)
    timings["kernel_map"] = time.perf_counter() - tick
    console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return BowFeatures(splits, kmeans, model, timings)


Splits = dict[str, tuple[object, np.ndarray]]


def _chi2_map(histograms: Splits) -> tuple[Splits, Callable]:
    # The additive χ² map is data-independent, so it is applied once here rather than inside every
    # CV fit; on sparse histograms that makes the pyramid's grid search several times faster.
    feature_map = AdditiveChi2Sampler(sample_steps=2).fit(histograms["train"][0])
    splits = {split: (feature_map.transform(sparse.csr_matrix(x)), y) for split, (x, y) in histograms.items()}
    return splits, lambda svm: Pipeline([("chi2", feature_map), ("svm", svm)])


KERNEL_ROWS = 256  # histograms per block of kernel values (a progress step)
RANK_TOLERANCE = 1e-6  # kernel eigenvalues below this fraction of the largest are float32 rounding


def intersection_kernel(histograms, landmarks) -> np.ndarray:
    """Σ_d min(x_d, l_d) for every histogram x and landmark l (non-negative rows), as
    (|x|₁ + |l|₁ − |x − l|₁) / 2: torch's L1 distances run on every core, several times faster than
    an element-wise minimum."""
    import torch

    rows, marks = (torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in (histograms, landmarks))
    out = np.empty((len(rows), len(marks)), np.float32)
    with progress_bar(len(rows), "intersection kernel", unit="img") as advance:
        for start in range(0, len(rows), KERNEL_ROWS):
            block = rows[start : start + KERNEL_ROWS]
            distances = torch.cdist(block, marks, p=1)
            out[start : start + len(block)] = ((block.sum(1)[:, None] + marks.sum(1)[None]) - distances).numpy() / 2
            advance(len(block))
    return out


def _intersection_map(histograms: Splits) -> tuple[Splits, Callable]:
    """The exact intersection kernel through the training histograms: with K = V·Λ·Vᵀ their kernel
    matrix, a histogram x maps to k(x)·V·Λ^(-1/2) (k(x): its kernel values with them), so the training
    rows' dot products are K itself and a linear SVM there is the kernel SVM. The fitted SVM maps back
    to weights on k(x): the model file holds the training histograms and one weight per histogram
    and class, like a kernel SVM's support vectors. (Re-drawn splits reuse this map: for their
    training images from the original test split the kernel is Nyström's approximation.)"""
    landmarks = np.asarray(histograms["train"][0], dtype=np.float32)
    values, vectors = eigh(intersection_kernel(landmarks, landmarks).astype(np.float64))
    keep = values > values.max() * RANK_TOLERANCE
    projection = vectors[:, keep] / np.sqrt(values[keep])
    splits = {"train": (vectors[:, keep] * np.sqrt(values[keep]), histograms["train"][1])}
    splits |= {split: (intersection_kernel(x, landmarks) @ projection, y) for split, (x, y) in histograms.items() if split != "train"}

    def model(svm: LinearSVC) -> Pipeline:
        on_kernel = FunctionTransformer(intersection_kernel, kw_args={"landmarks": landmarks})
        return Pipeline([("intersection", on_kernel), ("svm", with_weights(svm, svm.coef_ @ projection.T, svm.intercept_))])

    return splits, model
