"""Accuracy figures shared by every classifier (SVMs, heads, networks trained from scratch)."""

from __future__ import annotations

import numpy as np


def per_class_summary(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> tuple[list[float], list[list[int]]]:
    """Per-class accuracy (recall) and the confusion matrix, rows = true class."""
    from sklearn.metrics import confusion_matrix

    confusion = confusion_matrix(labels, predictions, labels=list(range(n_classes)))
    support = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(n_classes), where=support > 0)
    return per_class.tolist(), confusion.tolist()


def class_mean_accuracy(per_class: list[float] | None, confusion: list[list[int]] | None) -> float | None:
    """Mean of the per-class accuracies over the classes that have test images (balanced accuracy): the
    figure reported for data sets whose classes differ in size."""
    if not per_class:
        return None
    support = [sum(row) for row in confusion] if confusion else [1] * len(per_class)
    present = [accuracy for accuracy, count in zip(per_class, support) if count]
    return sum(present) / len(present) if present else None


def unequal_classes(confusion: list[list[int]] | None) -> bool:
    """Whether the test classes (those with images) differ in size, so that the overall accuracy and the
    class mean differ."""
    sizes = {sum(row) for row in confusion or [] if sum(row)}
    return len(sizes) > 1


def correctness(labels: np.ndarray, predictions: np.ndarray) -> str:
    """Which test images were classified right, in order, as "0"/"1" characters: what a paired comparison
    of two classifiers on the same test images needs (`report.mcnemar_p`), stored compactly."""
    return "".join("1" if right else "0" for right in np.asarray(labels) == np.asarray(predictions))


def over_seeds(accuracies: list[float]) -> tuple[float, float]:
    """The mean accuracy of several seeds' subsets and their spread (population std: the seeds drawn are all
    there is to describe)."""
    return float(np.mean(accuracies)), float(np.std(accuracies))


def tally(settings: list[str]) -> str:
    """The settings several seeds' CV chose, most often first: "C=1 ×3; C=10 ×2"."""
    from collections import Counter

    return "; ".join(f"{setting} ×{n}" if n > 1 else setting for setting, n in Counter(settings).most_common())
