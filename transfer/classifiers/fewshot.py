"""Few-shot subsets of a training split, and a probe's search inside one: its settings are chosen on the
subset's own images only (`settings.subset_grid`), and the whole test split scores the chosen one."""

from __future__ import annotations

import warnings

import numpy as np

from transfer.classifiers.probes import search_of
from transfer.classifiers.settings import GridConfig, KnnGrid, subset_grid
from transfer.classifiers.svm import GridResult
from transfer.core.choices import Norm, Probe
from transfer.core.errors import UserError

FEW_ROWS_WARNINGS = ("The number of unique classes is greater than 50%",  # classifiers' target check
                     "self.within_class_std_dev_ has at least 1 zero")  # the class means of one image each


def check_shots(labels: np.ndarray, shots: int, names: list[str]) -> None:
    """Every class has at least ``shots`` training images; else an error naming the smallest and its count."""
    counts = np.bincount(labels, minlength=len(names))
    smallest = int(counts.argmin())
    if shots > counts[smallest]:
        raise UserError(f"--shots {shots}: class {names[smallest]!r} has only {counts[smallest]} training images; "
                        f"ask for at most {counts[smallest]} per class")


def subset_rows(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """The training rows of one few-shot subset: per class, the first ``shots`` of a permutation drawn with
    ``seed``. A seed's subsets are nested (its 5-shot subset holds its 2-shot one), so its curve moves by
    the images added, not by a new draw."""
    rng = np.random.default_rng(seed)
    drawn = [rng.permutation(np.flatnonzero(labels == label))[:shots] for label in np.unique(labels)]
    return np.sort(np.concatenate(drawn))


def subset_search(probe: Probe, norms: tuple[Norm, ...], knn: KnnGrid, grid: GridConfig, subset: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], shots: int, n_classes: int) -> tuple[GridResult, GridConfig]:
    """``probe``'s search on a subset of ``shots`` images per class, with the CV that subset allows; returns it
    and the grid it searched (its `Folds`, and the fixed C where no CV is possible)."""
    config, knn_grid = subset_grid(grid, knn, shots)
    with warnings.catch_warnings():  # what scikit-learn says of any few rows per class, expected here
        for message in FEW_ROWS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        _, result, _ = search_of(probe, norms, knn_grid, n_classes).grid(subset, test, config, n_classes)
    return result, config
