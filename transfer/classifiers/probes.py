"""The probes beside the linear SVM on cached features, each with its setting chosen on the training split
only, on the SVM's folds: logistic regression (C by CV, through the SVM's grid search and its span
speed-up), a cosine k-NN vote (k and T by CV, DINO's weighting) and the nearest class mean (no setting).

A probe's search (`Search`) gives a `GridResult` on the dataset's split and the test accuracies of the
settings it would choose on re-drawn splits; `search_of` is the one door from a `Probe` to its search.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from transfer.classifiers.settings import GridConfig, KnnGrid
from transfer.classifiers.svm import (
    GridResult,
    check_training_data,
    choose_by_cv,
    cv_folds,
    fewest_fit_rows,
    fold_mean,
    linear_svm,
    norm_steps,
    scored_on_test,
    split_accuracies,
)
from transfer.core.choices import Norm, Probe
from transfer.core.console import warn

LOGREG_MAX_ITER = 2000  # L-BFGS iterations; the grid's largest C needs the most
SIMILARITY_VALUES = 2**24  # query rows × training rows per block of k-NN similarities (float32: 64 MiB)


def logistic_regression(norm: Norm = Norm.L2) -> Callable[[float], Pipeline]:
    """Factory of Pipeline(normalisation, multinomial L2 LogisticRegression(C))."""

    def make(c: float) -> Pipeline:
        return Pipeline([*norm_steps(norm), ("logreg", LogisticRegression(C=c, max_iter=LOGREG_MAX_ITER))])

    return make


def nearest_class_mean() -> Pipeline:
    """The class means of the L2-normalised training rows; a row goes to the nearest (Euclidean) mean."""
    return Pipeline([("norm", Normalizer()), ("ncm", NearestCentroid())])


@dataclass(frozen=True)
class KnnSetting:
    k: int
    temperature: float

    def __str__(self) -> str:
        return f"k={self.k}, T={self.temperature:g}"


@dataclass(frozen=True, kw_only=True)
class KnnModel:
    """A fitted k-NN vote: the L2-normalised training rows and their labels; plain arrays and numbers, so
    that a model file holds it without any code (`as_payload`)."""

    rows: np.ndarray  # float32, training rows × features, each of unit length
    labels: np.ndarray  # int64 per row
    classes: int
    k: int
    temperature: float

    def as_payload(self) -> dict:
        return {"rows": self.rows, "labels": self.labels, "classes": self.classes, "k": self.k,
                "temperature": self.temperature}

    @classmethod
    def of_payload(cls, payload: dict) -> KnnModel:
        return cls(rows=np.asarray(payload["rows"], dtype=np.float32), labels=np.asarray(payload["labels"], dtype=np.int64),
                   classes=int(payload["classes"]), k=int(payload["k"]), temperature=float(payload["temperature"]))

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Each row's vote per class: Σ exp(similarity / T) over its k most similar training rows."""
        (votes,) = knn_votes(self.rows, self.labels, _unit_rows(features), [KnnSetting(self.k, self.temperature)],
                             self.classes)
        return votes


def setting_text(setting) -> str:
    """A grid's setting as people read it: "C=0.1", "k=20, T=0.07", or "no setting" (the class means)."""
    if setting is None:
        return "no setting"
    return f"C={setting:g}" if isinstance(setting, (int, float)) else str(setting)


def _unit_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_votes(rows: np.ndarray, labels: np.ndarray, queries: np.ndarray, settings: list[KnnSetting],
              classes: int) -> list[np.ndarray]:
    """Per setting, the class votes (queries × classes) of unit ``queries`` among unit training ``rows``:
    the similarities and the largest k of them are computed once for the largest k of all settings, in
    blocks of queries that bound the memory, in torch (on CUDA when there is one)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    most = min(max(s.k for s in settings), len(rows))
    train = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
    train_labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    block = max(1, SIMILARITY_VALUES // max(len(rows), 1))
    found: list[list[np.ndarray]] = [[] for _ in settings]
    with torch.inference_mode():
        for start in range(0, len(queries), block):
            similarities = torch.from_numpy(np.ascontiguousarray(queries[start:start + block])).to(device) @ train.T
            top, index = similarities.topk(most, dim=1)  # sorted, most similar first
            neighbours = train_labels[index]
            for votes, setting in zip(found, settings):
                k = min(setting.k, most)
                weights = torch.exp(top[:, :k] / setting.temperature)
                votes.append(torch.zeros(len(top), classes, device=device, dtype=weights.dtype)
                             .scatter_add_(1, neighbours[:, :k], weights).cpu().numpy())
    return [np.concatenate(votes) if votes else np.zeros((0, classes), np.float32) for votes in found]


@dataclass(frozen=True)
class _Scorer:
    """A probe without a solver's grid: its settings, every setting's predictions from one fit on some rows
    (`predictions`), and the model of one setting fitted on all of them (`model`)."""

    settings: list[Any]
    predictions: Callable[[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray]]  # (fit rows, labels, rows to predict)
    model: Callable[[np.ndarray, np.ndarray, Any], Any]


def _knn_scorer(grid: KnnGrid, classes: int, training_rows: int) -> _Scorer:
    """k-NN over the grid; a k above the rows of the smallest fit (a CV fold's) is clipped to it, and said."""
    settings = [KnnSetting(k, t) for k in grid.k_grid for t in grid.temperatures]
    clipped = sorted({s.k for s in settings if s.k > training_rows})
    if clipped:
        warn(f"k-NN: k={', '.join(map(str, clipped))} is more than the {training_rows} training rows of the smallest "
             f"fit; clipped to {training_rows}", once=True)
        settings = list(dict.fromkeys(KnnSetting(min(s.k, training_rows), s.temperature) for s in settings))

    def predictions(x_fit, y_fit, x_eval) -> list[np.ndarray]:
        return [votes.argmax(axis=1) for votes in knn_votes(_unit_rows(x_fit), y_fit, _unit_rows(x_eval), settings, classes)]

    def model(x, y, setting: KnnSetting) -> KnnModel:
        return KnnModel(rows=_unit_rows(x), labels=np.asarray(y, dtype=np.int64), classes=classes, k=setting.k,
                        temperature=setting.temperature)

    return _Scorer(settings, predictions, model)


def _ncm_scorer() -> _Scorer:
    def model(x, y, _setting) -> Pipeline:
        return nearest_class_mean().fit(x, y)

    return _Scorer([None], lambda x_fit, y_fit, x_eval: [model(x_fit, y_fit, None).predict(x_eval)], model)


class Search(ABC):
    """How a probe chooses its setting on the training split and scores the test split."""

    @abstractmethod
    def grid(self, train, test, config: GridConfig, n_classes: int) -> tuple[str | None, GridResult, dict[str, float] | None]:
        """(the candidate CV chose, where there are several; the search; each candidate's best CV accuracy)."""

    @abstractmethod
    def redrawn(self, x, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], config: GridConfig) -> list[float]:
        """The test accuracy, on each re-drawn split, of the setting CV chooses on its training part."""


@dataclass(frozen=True)
class LinearSearch(Search):
    """A C grid per candidate model (a normalisation each), fitted by the SVM's grid search."""

    models: dict[str, Callable]

    def grid(self, train, test, config, n_classes):
        chosen, result, candidates_cv = choose_by_cv(self.models, train, test, config, n_classes)
        several = len(self.models) > 1
        return (chosen if several else None), result, (candidates_cv if several else None)

    def redrawn(self, x, y, splits, config):
        return split_accuracies(self.models, x, y, splits, config)


@dataclass(frozen=True)
class ScorerSearch(Search):
    """k-NN or the class means: every setting scored on each CV fold from one fit, the test split once."""

    make: Callable[[int], _Scorer]  # from the rows of the smallest fit

    def _choose(self, x, y, config) -> tuple[_Scorer, np.ndarray]:
        """The scorer and its CV accuracies (folds × settings; no folds without CV) on training rows ``x``."""
        check_training_data(x, y)
        folds = cv_folds(config, y)
        scorer = self.make(fewest_fit_rows(folds, len(y)))
        scores = np.array([[np.mean(predicted == y[held]) for predicted in scorer.predictions(x[fit], y[fit], x[held])]
                           for fit, held in folds]).reshape(len(folds), len(scorer.settings))
        return scorer, scores

    def grid(self, train, test, config, n_classes):
        x_train, y_train = train
        begun = time.perf_counter()
        scorer, scores = self._choose(x_train, y_train, config)
        cv_mean = [fold_mean(column) for column in scores.T]
        chosen = int(np.argmax(cv_mean))  # the first among ties: the smallest k, then the lowest T
        model = scorer.model(x_train, y_train, scorer.settings[chosen])
        fit_seconds = time.perf_counter() - begun
        return None, GridResult(
            grid=list(scorer.settings), cv_mean=cv_mean, cv_std=[fold_mean(column, np.std) for column in scores.T],
            chosen=scorer.settings[chosen], model=model, fit_seconds=fit_seconds,
            **scored_on_test(test, lambda x_test: scorer.predictions(x_train, y_train, x_test), chosen, n_classes)), None

    def redrawn(self, x, y, splits, config):
        accuracies = []
        for train_rows, test_rows in splits:
            scorer, scores = self._choose(x[train_rows], y[train_rows], config)
            predicted = scorer.predictions(x[train_rows], y[train_rows], x[test_rows])[int(np.argmax(scores.mean(axis=0)))]
            accuracies.append(float(np.mean(predicted == y[test_rows])))
        return accuracies


def search_of(probe: Probe, norms: tuple[Norm, ...], knn: KnnGrid, n_classes: int) -> Search:
    """The search of ``probe``: the linear ones choose among ``norms`` as they choose C; k-NN and the class
    means work on L2-normalised rows, as their definitions say."""
    if probe == Probe.SVM:
        return LinearSearch({str(norm): linear_svm(norm) for norm in norms})
    if probe == Probe.LOGREG:
        return LinearSearch({str(norm): logistic_regression(norm) for norm in norms})
    if probe == Probe.KNN:
        return ScorerSearch(lambda rows: _knn_scorer(knn, n_classes, rows))
    return ScorerSearch(lambda _rows: _ncm_scorer())

