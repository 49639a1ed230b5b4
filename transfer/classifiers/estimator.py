"""The probes as a scikit-learn classifier, for notebooks and scikit-learn's own tools (`Pipeline`,
`cross_val_score`, `GridSearchCV`): the same searches as `transfer svm --probe`, run on whatever rows
``fit`` is given."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from transfer.classifiers.probes import KnnModel, search_of, setting_text
from transfer.classifiers.settings import (
    DEFAULT_C_GRID,
    DEFAULT_K_GRID,
    DEFAULT_TEMPERATURES,
    GridConfig,
    KnnGrid,
    subset_grid,
)
from transfer.core.choices import Folds, Norm, Probe
from transfer.core.config import ConfigError, choice
from transfer.core.errors import UserError


class LinearProbe(ClassifierMixin, BaseEstimator):
    """A probe on feature rows: ``fit`` chooses its setting (C; k and T for k-NN) by CV on the rows it is given
    only, then refits on all of them. The CV is stratified ``cv``-fold where every class has ``cv`` rows,
    else leave-one-out, else (one row in some class) the fixed settings, as inside a few-shot subset.

    probe: "svm" (LinearSVC), "logreg" (multinomial logistic regression), "knn" (cosine k-NN, votes weighted
    by exp(similarity / T)) or "ncm" (nearest class mean). ``norm`` normalises the rows first (the linear
    probes; k-NN and the class means always use L2). After ``fit``: ``classes_``, ``chosen_`` (the setting as
    text), ``folds_`` (the CV it ran) and ``cv_results_`` (each setting's mean and std CV accuracy).
    """

    def __init__(self, probe: str = "svm", c_grid=DEFAULT_C_GRID, cv: int = GridConfig.cv, norm: str = "l2",
                 k_grid=DEFAULT_K_GRID, temperatures=DEFAULT_TEMPERATURES, n_jobs: int | None = None,
                 random_state: int = 0) -> None:
        self.probe = probe
        self.c_grid = c_grid
        self.cv = cv
        self.norm = norm
        self.k_grid = k_grid
        self.temperatures = temperatures
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y) -> LinearProbe:
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs rows of 2 classes or more; the data holds one class only: "
                             f"{self.classes_[0]!r}")
        try:
            probe = choice(Probe, self.probe, "probe")
            norm = choice(Norm, self.norm, "norm")
            grid = GridConfig(c_grid=tuple(self.c_grid), cv=self.cv, jobs=self.n_jobs or 1, seed=self.random_state)
            knn = KnnGrid(k_grid=tuple(self.k_grid), temperatures=tuple(self.temperatures))
        except ConfigError as error:  # scikit-learn's convention for a bad parameter
            raise ValueError(str(error)) from None
        config, knn_grid = subset_grid(grid, knn, int(np.bincount(encoded).min()))
        try:
            _, result, _ = search_of(probe, (norm,), knn_grid, len(self.classes_)).grid((X, encoded), None, config,
                                                                                       len(self.classes_))
        except UserError as error:  # the data's fault (e.g. NaN), said in scikit-learn's way
            raise ValueError(str(error)) from None
        self.model_ = result.model
        self.chosen_ = setting_text(result.chosen)
        self.folds_: Folds = config.folds
        self.cv_results_ = {"setting": [setting_text(s) for s in result.grid], "mean_cv_accuracy": result.cv_mean,
                            "std_cv_accuracy": result.cv_std}
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        if isinstance(self.model_, KnnModel):
            return self.classes_[self.model_.scores(X).argmax(axis=1)]
        return self.classes_[self.model_.predict(X)]

    def _linear(self) -> bool:
        """Whether the probe is a linear one (the class means' scores are distances, which predict does not
        read as scikit-learn's decision functions are read)."""
        return self.probe in (Probe.SVM, Probe.LOGREG)

    @available_if(_linear)
    def decision_function(self, X) -> np.ndarray:
        """The linear probes' class scores (one column for two classes, as scikit-learn's classifiers)."""
        check_is_fitted(self)
        return self.model_.decision_function(validate_data(self, X, reset=False, dtype=[np.float64, np.float32]))
