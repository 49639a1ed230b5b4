"""Improved Fisher vectors (Perronnin, Sánchez & Mensink 2010) on dense rootSIFT, with a spatial pyramid.

Stages, on the same dense SIFT as bag-of-words (`bow.py`, computed per image, not stored):

1. the encoder: PCA of rootSIFT and a diagonal Gaussian mixture, fitted on a seeded sample of
   training descriptors                                                             ``fisher-<digest>.skops``
2. per image and pyramid region: the gradients of the mixture's log-likelihood with respect to its
   means and variances (2 · components · PCA dimensions values), power- and L2-normalised, computed
   on every core with the image's descriptors.

Stage 2 is not cached: its vectors are large (float32, 2·K·D per region, 8 regions with the pyramid)
and take about as long to compute as to read back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer.core.archive import SKOPS_SUFFIX, load_estimator, save_estimator
from transfer.core.console import console
from transfer.core.errors import UserError
from transfer.core.keys import KeyKind, content_key
from transfer.core.paths import CacheFolder
from transfer.data.datasets import SPLITS, ImageDataset
from transfer.descriptors.bow import (
    bow_stages,
    map_images,
    one_thread,
    readable_sift,
    sift_or_reason,
    training_sample,
    warn_unreadable,
)
from transfer.descriptors.settings import PYRAMID_GRIDS, FisherConfig


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """rootSIFT (Arandjelović & Zisserman 2012): the square root of the L1-normalised descriptor."""
    values = descriptors.astype(np.float32)
    return np.sqrt(values / np.maximum(values.sum(axis=1, keepdims=True), 1e-12))


# ------------------------------------------------------------------------- stage 1: encoder

def encoder_key(dataset_fingerprint: str, config: FisherConfig) -> str:
    """What the encoder depends on: the images, the SIFT settings and the fitting settings (not the pyramid)."""
    return content_key(KeyKind.FISHER_ENCODER, dataset=dataset_fingerprint, sift=config.sift, components=config.components,
                       pca=config.pca, sample=config.sample, seed=config.seed)


def fit_encoder(dataset: ImageDataset, config: FisherConfig, cache_dir: Path, jobs: int = -1) -> tuple[dict, Path]:
    """Stage 1: {"pca": PCA, "gmm": GaussianMixture} fitted on a seeded sample of training rootSIFT."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    path = CacheFolder(cache_dir).artifact("bow", f"fisher-{encoder_key(dataset.fingerprint, config)}{SKOPS_SUFFIX}")
    if path.exists():
        return load_estimator(path, "a Fisher vector encoder"), path
    sample = root_sift(training_sample(dataset, config.sift, config.sample, config.seed, jobs))
    if len(sample) < max(config.components, config.pca):
        raise UserError(f"only {len(sample)} training descriptors for {config.components} Gaussians in "
                        f"{config.pca} dimensions; lower --components or --pca")
    with console.status(f"PCA to {config.pca} dimensions, then a {config.components}-Gaussian mixture on {len(sample):,} descriptors"):
        pca = PCA(config.pca, random_state=config.seed).fit(sample)
        gmm = GaussianMixture(config.components, covariance_type="diag", reg_covar=1e-4, max_iter=100,
                              random_state=config.seed).fit(pca.transform(sample))
    encoder = {"pca": pca, "gmm": gmm}
    return encoder, save_estimator(path, encoder)


# ------------------------------------------------------------------------- stage 2: vectors

def fine_cells(positions: np.ndarray, pyramid: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each descriptor's cell (x, y in [0, 1)) on the coarsest grid of which every pyramid region is a
    union (2 columns × 6 rows), and the regions × cells membership matrix (float32 0/1)."""
    grids = PYRAMID_GRIDS if pyramid else PYRAMID_GRIDS[:1]
    columns, rows = math.lcm(*(nx for nx, _ in grids)), math.lcm(*(ny for _, ny in grids))
    cx = np.minimum((positions[:, 0] * columns).astype(np.int64), columns - 1)
    cy = np.minimum((positions[:, 1] * rows).astype(np.int64), rows - 1)
    cell_x, cell_y = np.tile(np.arange(columns), rows), np.repeat(np.arange(rows), columns)
    membership = [(cell_x * nx // columns == rx) & (cell_y * ny // rows == ry)
                  for nx, ny in grids for ry in range(ny) for rx in range(nx)]
    return cy * columns + cx, np.array(membership, np.float32)


def posteriors(x: np.ndarray, gmm) -> np.ndarray:
    """N × K float32: each descriptor's posterior over the mixture's diagonal Gaussians. The same as
    ``gmm.predict_proba`` (to float32 rounding), written here in float32 because that call, which
    works in float64, was nearly all of an image's encoding time (docs/measured-notes.md)."""
    precision = (1.0 / gmm.covariances_).astype(np.float32)  # K × D
    mean = gmm.means_.astype(np.float32)
    constant = (np.log(gmm.weights_) - 0.5 * (np.log(gmm.covariances_).sum(axis=1) + x.shape[1] * np.log(2 * np.pi)
                                              + (gmm.means_**2 / gmm.covariances_).sum(axis=1))).astype(np.float32)
    log_prob = constant - 0.5 * (np.square(x) @ precision.T) + x @ (mean * precision).T
    log_prob -= log_prob.max(axis=1, keepdims=True)
    np.exp(log_prob, out=log_prob)
    return log_prob / log_prob.sum(axis=1, keepdims=True)


def fisher_vector(descriptors: np.ndarray, positions: np.ndarray, encoder: dict, pyramid: bool) -> np.ndarray:
    """One image's improved Fisher vector: per region, the normalised gradients with respect to the
    means and the variances, power- then L2-normalised; regions weighted equally (unit norm overall).

    Written here rather than with `skimage.feature.fisher_vector`, which encodes one descriptor set per
    call: here the posteriors are computed once, the statistics once per cell of the finest grid (each
    descriptor in one cell), and the 8 pyramid regions are sums of cells.
    """
    pca, gmm = encoder["pca"], encoder["gmm"]
    x = pca.transform(root_sift(descriptors)).astype(np.float32)
    cells, membership = fine_cells(positions, pyramid)
    order = np.argsort(cells, kind="stable")
    x = x[order]
    gamma = posteriors(x, gmm)  # N × K
    bounds = np.searchsorted(cells[order], np.arange(membership.shape[1] + 1))
    (k, d), spans = gmm.means_.shape, list(zip(bounds[:-1], bounds[1:]))
    s0 = np.stack([gamma[a:b].sum(axis=0) for a, b in spans])  # cells × K
    s1 = np.stack([gamma[a:b].T @ x[a:b] for a, b in spans])  # cells × K × D
    s2 = np.stack([gamma[a:b].T @ np.square(x[a:b]) for a, b in spans])
    counts = np.maximum(membership @ np.diff(bounds).astype(np.float32), 1.0)[:, None, None]
    regions = len(membership)
    s0 = (membership @ s0).reshape(regions, k, 1) / counts
    s1 = (membership @ s1.reshape(len(spans), -1)).reshape(regions, k, d) / counts
    s2 = (membership @ s2.reshape(len(spans), -1)).reshape(regions, k, d) / counts
    mean, var, weight = (a.astype(np.float32) for a in (gmm.means_, gmm.covariances_, gmm.weights_))
    by_means = (s1 - mean * s0) / (np.sqrt(var) * np.sqrt(weight)[:, None])
    by_variances = (s2 - 2 * mean * s1 + (mean**2 - var) * s0) / (var * np.sqrt(2 * weight)[:, None])
    vector = np.concatenate([by_means, by_variances], axis=2).reshape(regions, -1)
    vector = np.sign(vector) * np.sqrt(np.abs(vector))
    vector /= np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-12)
    return (vector / np.sqrt(regions)).reshape(-1)


def _dimension(config: FisherConfig) -> int:
    return 2 * config.components * config.pca * config.regions


def _vectors_task(paths: list[Path], config: FisherConfig, encoder: dict) -> list:
    """Per image: its Fisher vector, or the reason it cannot be read."""
    one_thread()
    found = [sift_or_reason(path, config.sift) for path in paths]
    return [item if isinstance(item, str) else fisher_vector(*item, encoder, config.pyramid) for item in found]


def load_vectors(dataset: ImageDataset, encoder: dict, config: FisherConfig, jobs: int = -1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (Fisher vectors, labels)} over readable images."""
    out = {}
    for split in SPLITS:
        samples = dataset.samples(split)
        vectors = np.empty((len(samples), _dimension(config)), np.float32)
        valid = np.ones(len(samples), bool)
        done = 0
        for batch in map_images([dataset.path(s) for s in samples], _vectors_task, jobs, f"Fisher vectors {split}", config, encoder):
            for item in batch:
                if isinstance(item, str):
                    warn_unreadable(samples[done].relpath, item)
                    valid[done] = False
                else:
                    vectors[done] = item
                done += 1
        labels = np.array([s.label for s in samples], np.int64)
        out[split] = (vectors, labels) if valid.all() else (vectors[valid], labels[valid])  # no copy of gigabytes when all are read
    return out


def image_vectors(paths: list[Path], config: FisherConfig, encoder: dict) -> tuple[np.ndarray, np.ndarray]:
    """Fisher vectors of new images with a fitted encoder (for `transfer predict`); (vectors, readable mask)."""
    items, ok = readable_sift(paths, config.sift)
    vectors = [fisher_vector(descriptors, positions, encoder, config.pyramid) for descriptors, positions in items]
    return (np.stack(vectors) if vectors else np.zeros((0, _dimension(config)), np.float32)), ok


@dataclass
class FisherFeatures:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # Fisher vectors, labels
    encoder: dict
    timings: dict[str, float]


def fisher_features(dataset: ImageDataset, config: FisherConfig, cache_dir: Path, jobs: int = -1) -> FisherFeatures:
    """Stage 1 (skipped when cached) and the vectors; timings of each stage in seconds."""

    def stages() -> FisherFeatures:
        timings = {}
        tick = time.perf_counter()
        encoder, _ = fit_encoder(dataset, config, cache_dir, jobs)
        timings["vocabulary"] = time.perf_counter() - tick
        tick = time.perf_counter()
        splits = load_vectors(dataset, encoder, config, jobs)
        timings["encoding"] = time.perf_counter() - tick
        console.print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        return FisherFeatures(splits, encoder, timings)

    return bow_stages(stages)
