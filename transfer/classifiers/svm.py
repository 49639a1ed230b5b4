"""Linear SVMs on features, with C chosen honestly: by cross-validation on the training split only.

The test split is scored for every C (to draw the curve) and for the chosen C, but nothing that
is computed from it feeds back into the choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler
from sklearn.svm import LinearSVC

from transfer.classifiers.metrics import correctness, per_class_summary
from transfer.classifiers.settings import GridConfig
from transfer.core.choices import Folds, Norm
from transfer.core.config import choice
from transfer.core.errors import UserError


def signed_sqrt(x):
    """Power normalisation: sign(x)·√|x| of every value (row-wise, nothing fitted)."""
    if sparse.issparse(x):
        x = x.copy()
        x.data = np.sign(x.data) * np.sqrt(np.abs(x.data))
        return x
    return np.sign(x) * np.sqrt(np.abs(x))


def side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """Several feature blocks of the same rows (e.g. layers), each row of each block L2-normalised so
    that no block dominates by its scale, then concatenated. Stateless: training and new rows alike."""
    return np.hstack([block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12) for block in blocks])


def norm_steps(norm: Norm) -> list:
    if norm == Norm.POWER:
        return [("power", FunctionTransformer(signed_sqrt)), ("norm", Normalizer())]
    return [("norm", {Norm.L2: Normalizer(), Norm.STANDARD: StandardScaler(), Norm.NONE: "passthrough"}[norm])]


def linear_svm(norm: Norm = Norm.L2) -> Callable[[float], Pipeline]:
    """Factory of Pipeline(normalisation, LinearSVC(C))."""
    norm = choice(Norm, norm, "norm")

    def make(c: float) -> Pipeline:
        return Pipeline([*norm_steps(norm), ("svm", plain_svm(c))])

    return make


def choose_by_cv(models: dict[str, Callable], train, test, config: GridConfig, n_classes: int,
                 in_span: bool = True) -> tuple[str, GridResult, dict[str, float]]:
    """A C grid per candidate model (e.g. per normalisation) on the same folds; the candidate with the
    best CV accuracy wins (the first among ties). Returns its name, its grid (``fit_seconds``: every
    candidate's) and every candidate's best CV accuracy. The test split plays no part in the choice."""
    results = {name: grid_search(make, train, test, config, n_classes, in_span) for name, make in models.items()}
    cv = {name: max(result.cv_mean) for name, result in results.items()}
    chosen = max(cv, key=lambda name: cv[name])
    return chosen, replace(results[chosen], fit_seconds=sum(r.fit_seconds for r in results.values())), cv


def plain_svm(c: float) -> LinearSVC:
    """LinearSVC on features that are already mapped and scaled (BoW's χ² map)."""
    return LinearSVC(C=c, max_iter=10_000, random_state=0)  # liblinear's dual solver shuffles: same seed, same model


@dataclass
class GridResult:
    """A probe's search: per setting of its grid (C values, or `probes.KnnSetting`s) the CV accuracy on the
    training split and the test accuracy (empty, NaN, without a test split); the CV-chosen setting and its fitted
    model on all the training rows."""

    grid: list[Any]
    cv_mean: list[float]
    cv_std: list[float]
    test_per_setting: list[float]
    chosen: Any
    test_accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]
    model: Pipeline
    fit_seconds: float
    test_correct: str  # the chosen model's test images right ("1") or wrong ("0"), in order


def check_training_data(features: np.ndarray, labels: np.ndarray) -> None:
    """Rows that match their labels, of two classes or more, finite (how many a class needs: `cv_folds`)."""
    if features.ndim != 2 or features.shape[0] != len(labels):
        raise UserError(f"features {features.shape} and labels {labels.shape} do not match")
    check_classes(labels)
    values = features.data if sparse.issparse(features) else features
    if not np.isfinite(values).all():
        raise UserError("the features contain NaN or infinite values")


def check_training_labels(labels: np.ndarray, cv: int, names: list[str] | None = None) -> None:
    """Two classes or more, each with at least ``cv`` images; ``names`` (the class of each label) name them."""
    classes, counts = np.unique(labels, return_counts=True)
    check_classes(labels, names)
    if cv < 2:
        raise UserError(f"--cv must be at least 2, got {cv}")
    if counts.min() < cv:
        raise UserError(f"--cv {cv}: the smallest class, {_named(classes[counts.argmin()], names)}, has only "
                        f"{counts.min()} training images; lower --cv")


def _named(label, names: list[str] | None) -> str:
    return repr(names[label]) if names is not None else f"number {label}"


def check_classes(labels: np.ndarray, names: list[str] | None = None) -> None:
    """Two classes or more; ``names`` (the class of each label) name the only one."""
    classes = np.unique(labels)
    if len(classes) < 2:
        only = f" ({_named(classes[0], names)})" if len(classes) else ""
        raise UserError(f"the training split has only one class{only}; a classifier needs two or more")


class TriangularCoordinates:
    """Coordinates for rows known only through their Gram matrix G: a pivoted Cholesky factor
    Pᵀ·G·P = L·Lᵀ gives row ``order[i]`` the coordinates ``rows[i]`` (rank r columns), whose dot products
    are G again. An L2-penalised linear SVM depends on its rows only through G, so it finds the same
    decision values there as on the rows themselves. L is lower trapezoidal: half its values are exact
    zeros, which liblinear neither stores nor visits, so each pass of its solver costs half that of
    dense coordinates of the same size (an eigenbasis V·Λ^(1/2); docs/measured-notes.md)."""

    def __init__(self, gram: np.ndarray) -> None:
        from scipy.linalg import lapack

        factor, pivots, self.rank, _ = lapack.dpstrf(gram, lower=1)  # rank: columns before the pivots vanish
        self.order = pivots - 1
        self.rows = np.ascontiguousarray(np.tril(factor)[:, : self.rank])
        self._leading = self.rows[: self.rank]  # triangular, invertible

    def of_others(self, products: np.ndarray) -> np.ndarray:
        """Coordinates of other rows, from their dot products with the first ``rank`` rows of ``order``
        (rank × others): the same coordinates the rows here would have, had they been factored too."""
        from scipy.linalg import solve_triangular

        return solve_triangular(self._leading, products, lower=True).T

    def on_rows(self, weights: np.ndarray) -> np.ndarray:
        """Weight vectors in these coordinates (classes × rank) as combinations of the rows, in their
        original order (rows × classes): the same decisions on any row as Σ coefficient_i · row_i."""
        from scipy.linalg import solve_triangular

        coefficients = np.zeros((len(self.order), len(weights)))
        coefficients[self.order[: self.rank]] = solve_triangular(self._leading, weights.T, lower=True, trans="T")
        return coefficients


@dataclass
class _Part:
    """What one fit sees: rows and labels, fitted on ``fit`` and scored on ``held_out`` (None: a final fit)."""

    rows: Any  # an array or a sparse matrix
    labels: np.ndarray
    fit: Any  # indices or a slice
    held_out: Any = None


class SpanProjection:
    """The training rows as coordinates in their own span, for each fold and for the whole training set.

    LinearSVC (liblinear) minimises ||w||² + C·Σ loss(w·[x, s]) over the rows with liblinear's intercept
    column s appended, so the optimal w lies in the span of the training rows (representer theorem), and
    the problem depends on the rows only through their Gram matrix G: in any coordinates with the same
    G (`TriangularCoordinates`) it has the same decision values, with at most n values per row, half of
    them zeros: when n < d every pass of the solver costs about n/(2d) of what it costs on the features.
    When n > d, G has rank r ≤ d + 1 and the coordinates r columns, r²/2 + (n − r)·r values in all
    instead of n·d.
    G is computed once and serves every fold and every C; a fold's coordinates come from its own block
    of G (its rows span less than all of them), its held-out rows' from their products with the fold's.
    """

    BLOCK = 4096  # feature columns per float64 block of the Gram matrix (bounds the extra memory)

    def __init__(self, x_train, intercept_scaling: float) -> None:
        self.rows = x_train
        self.intercept_scaling = intercept_scaling
        self.gram = self._gram(x_train) + intercept_scaling**2
        self.whole = TriangularCoordinates(self.gram)

    def part(self, labels: np.ndarray, fit: np.ndarray | None = None, held_out: np.ndarray | None = None) -> _Part:
        """The fit's rows (all of them when ``fit`` is None) as coordinates, held-out rows after them."""
        if fit is None:
            return _Part(self.whole.rows, labels[self.whole.order], slice(None))
        assert held_out is not None  # a fold's rows: the held-out ones come with them
        coordinates = TriangularCoordinates(self.gram[np.ix_(fit, fit)])
        order = fit[coordinates.order]
        others = coordinates.of_others(self.gram[np.ix_(order[: coordinates.rank], held_out)])
        return _Part(np.vstack([coordinates.rows, others]), np.concatenate([labels[order], labels[held_out]]),
                     slice(0, len(fit)), slice(len(fit), None))

    def _column_blocks(self, x):
        """(columns, float64 copy of those columns of dense x), a block at a time."""
        for start in range(0, x.shape[1], self.BLOCK):
            columns = slice(start, start + self.BLOCK)
            yield columns, np.asarray(x[:, columns], dtype=np.float64)

    def _gram(self, x) -> np.ndarray:
        if sparse.issparse(x):
            x = x.astype(np.float64)
            return np.asarray((x @ x.T).todense())
        gram = np.zeros((x.shape[0], x.shape[0]))
        for _, block in self._column_blocks(x):
            gram += block @ block.T
        return gram

    def _weights(self, on_rows: np.ndarray) -> np.ndarray:
        """w = Aᵀ·on_rows, as classes × features (dense rows a block of columns at a time: a float64
        copy of all of them would double the memory of large features)."""
        if sparse.issparse(self.rows):
            return np.asarray(self.rows.T @ on_rows).T
        weights = np.empty((on_rows.shape[1], self.rows.shape[1]))
        for columns, block in self._column_blocks(self.rows):
            weights[:, columns] = (block.T @ on_rows).T
        return weights

    def raw_model(self, fitted):
        """The same classifier on the original features, from one fitted on all the training rows: its
        intercept is the solver's own (zero where it is penalised as an appended column) plus that column's part."""
        on_rows = self.whole.on_rows(fitted.coef_)  # n × classes: w = Aᵀ·on_rows
        return with_weights(fitted, self._weights(on_rows), fitted.intercept_ + self.intercept_scaling**2 * on_rows.sum(axis=0))


def with_weights(fitted, coef: np.ndarray, intercept: np.ndarray):
    """A copy of a fitted linear classifier (LinearSVC, LogisticRegression) that computes the same decisions on other features, through the
    weights ``coef`` (classes × features) and ``intercept`` found for them."""
    model = clone(fitted).set_params(fit_intercept=True)
    for name, value in vars(fitted).items():
        if name.endswith("_") and not name.startswith("__"):
            setattr(model, name, value)
    model.coef_ = np.ascontiguousarray(coef)
    model.intercept_ = np.asarray(intercept, dtype=np.float64)
    model.n_features_in_ = coef.shape[1]
    return model


@dataclass
class SpanFit:
    """How a grid is fitted in the training rows' span: the row-wise steps before the linear classifier (a
    LinearSVC or a LogisticRegression), the classifier, and whether the model is a Pipeline (the models
    returned have the same form as ``make_model``'s)."""

    before: list
    svm: LinearSVC | LogisticRegression
    pipeline: bool

    @property
    def penalised_intercept(self) -> float:
        """The scale of the intercept column liblinear appends to the rows and penalises like a weight (it
        joins the Gram matrix); 0 for logistic regression, whose solver fits an unpenalised intercept itself."""
        return self.svm.intercept_scaling if isinstance(self.svm, LinearSVC) else 0.0

    def make_fit(self, c: float):
        """The classifier of ``c`` as it is fitted on span coordinates."""
        if isinstance(self.svm, LinearSVC):
            # The primal solver (trust-region Newton) takes a handful of iterations at any C; the dual one,
            # sklearn's choice for fewer rows than columns, slows down as C grows (bench/svm.py).
            return clone(self.svm).set_params(C=c, fit_intercept=False, dual=False)
        return clone(self.svm).set_params(C=c)

    def prepare(self, x):
        """The row-wise steps (stateless: nothing is fitted, so train and test rows go through alike)."""
        return Pipeline(self.before).fit_transform(x) if self.before else x

    def original_model(self, svm: LinearSVC):
        return Pipeline([*self.before, ("svm", svm)]) if self.pipeline else svm

    def predictions(self, svms: list[LinearSVC], x, block: int = 256) -> list[np.ndarray]:
        """Every model's predictions from one product of the rows with all their weights, in float64 as
        LinearSVC computes them (it converts all rows to float64 per model and per call; here a block of
        rows at a time, once; the row-wise steps too, so no prepared copy of all rows is made)."""
        weights = np.concatenate([svm.coef_ for svm in svms]).T
        scores = np.concatenate([np.asarray(self.prepare(x[i:i + block]).astype(np.float64) @ weights)
                                 for i in range(0, x.shape[0], block)])
        found, start = [], 0
        for svm in svms:
            margins = scores[:, start:start + len(svm.coef_)] + svm.intercept_
            start += len(svm.coef_)
            found.append(svm.classes_[margins.argmax(axis=1) if margins.shape[1] > 1 else (margins[:, 0] > 0).astype(int)])
        return found


def span_fit(make_model: Callable, shape: tuple[int, int], fewest_fit_rows: int) -> SpanFit | None:
    """How to fit the grid in the training rows' span, when that gives the same models and is faster: an
    L2-penalised linear classifier after row-wise steps only (a fold-fitted scaler would change the span per
    fold). A LogisticRegression when there are fewer training rows n than features d. A LinearSVC then
    too (the span has fewer dimensions), or with at least
    d rows in every fit and at most 2d in all: sklearn then fits the features with liblinear's primal
    solver anyway, which in the span visits at most 3/4 as many values (d²/2 + (n − d)·d instead of
    n·d) and runs on threads; with more rows the saving fades while the n × n Gram matrix grows. In
    between, sklearn's dual solver on the features was the faster (docs/measured-notes.md).
    ``shape``: the training features'; ``fewest_fit_rows``: the rows of the smallest fit (a CV fold's).
    None otherwise."""
    model = make_model(1.0)
    pipeline = isinstance(model, Pipeline)
    steps = list(model.steps) if pipeline else [("svm", model)]
    (_, svm), before = steps[-1], steps[:-1]
    stateless = all(step == "passthrough" or isinstance(step, (Normalizer, FunctionTransformer)) for _, step in before)
    rows, columns = shape
    if isinstance(svm, LogisticRegression):
        # An L2 penalty and an unpenalised intercept: the optimum lies in the rows' span too. Its solver
        # (L-BFGS) works on dense rows, so only fewer dimensions save anything, not the coordinates' zeros.
        fits = svm.l1_ratio in (0, 0.0, None) and svm.fit_intercept and svm.solver == "lbfgs" and rows < columns
    else:
        fits = (isinstance(svm, LinearSVC) and svm.penalty == "l2" and svm.fit_intercept
                and (rows < columns or fewest_fit_rows >= columns >= rows / 2))
    if not (stateless and fits):
        return None
    return SpanFit(before, svm, pipeline)


def fewest_fit_rows(folds: list[tuple[np.ndarray, np.ndarray]], rows: int) -> int:
    """The rows of the smallest fit: a CV fold's, or all ``rows`` without CV."""
    return min((len(fit) for fit, _ in folds), default=rows)


def _fit(model, part: _Part):
    """Fit on the part's fit rows; return the held-out accuracy, or the model itself when nothing is held out."""
    model.fit(part.rows[part.fit], part.labels[part.fit])
    return model if part.held_out is None else model.score(part.rows[part.held_out], part.labels[part.held_out])


def cv_folds(config: GridConfig, labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The CV folds of the training rows with these labels: (fit rows, held-out rows) each; none without CV."""
    if config.folds == Folds.NONE:
        return []
    if config.folds == Folds.LEAVE_ONE_OUT:
        every = np.arange(len(labels))
        return [(np.delete(every, row), every[row:row + 1]) for row in every]
    check_training_labels(labels, config.cv)
    return list(StratifiedKFold(config.cv, shuffle=True, random_state=config.seed).split(labels, labels))


@dataclass
class _Setup:
    """What a grid's fits see (the training rows' span coordinates, or the rows themselves) and the
    model of each C; with the span, how to get models and predictions on the original features."""

    train: tuple[object, np.ndarray]
    make_fit: Callable
    span: SpanFit | None = None
    projection: SpanProjection | None = None

    @classmethod
    def of(cls, make_model: Callable, train, folds: list, in_span: bool) -> _Setup:
        span = span_fit(make_model, train[0].shape, fewest_fit_rows(folds, len(train[1]))) if in_span else None
        if span is None:
            return cls(train, make_model)
        projection = SpanProjection(span.prepare(train[0]), span.penalised_intercept)
        # No fit in the span draws random numbers, so they can run on threads (`_Fits`).
        # Only the prepared rows are kept (the projection's): the fits and the models need no others.
        return cls((projection.rows, train[1]), span.make_fit, span, projection)

    def part(self, fit: np.ndarray | None = None, held_out: np.ndarray | None = None) -> _Part:
        """A fold's fit and held-out rows, or all the training rows (``fit`` None)."""
        if self.projection is not None:
            return self.projection.part(self.train[1], fit, held_out)
        return _Part(*self.train, slice(None) if fit is None else fit, held_out)

    def on_rows(self, fitted: list) -> list:
        """The fitted models as they apply to the rows after the row-wise steps (LinearSVCs, or as fitted)."""
        if self.span is None:
            return fitted
        assert self.projection is not None  # a span fit projects the rows
        return [self.projection.raw_model(model) for model in fitted]

    def original_models(self, on_rows: list) -> list:
        return on_rows if self.span is None else [self.span.original_model(svm) for svm in on_rows]

    def test_predictions(self, on_rows: list, x_test) -> list[np.ndarray]:
        if self.span is None:
            return [model.predict(x_test) for model in on_rows]
        return self.span.predictions(on_rows, x_test)


class _Fits:
    """Where a grid's fits run, on ``jobs`` cores, handed out largest C first (those take longest, so the
    workers finish together).

    Fits in the training rows' span (``threads``) run on threads: liblinear fits without the GIL, the
    threads share the parent's arrays instead of copying them to other processes, and work can be queued
    while earlier work runs (`split_accuracies`). Meanwhile BLAS runs on one thread per caller: the
    cores are the fits' threads; BLAS threads of its own beside them would take turns with them, and a
    split's fits then ran slower instead of faster (docs/measured-notes.md). Other fits run in
    processes (joblib), one batch at a time: a LinearSVC there may use liblinear's dual solver, which
    shuffles with one process-wide random generator, so two of its fits in one process would not reproduce.
    """

    def __init__(self, jobs: int, threads: bool) -> None:
        from joblib import effective_n_jobs

        from transfer.core.memory import one_heap_for_threads

        self.jobs = jobs
        if threads:
            one_heap_for_threads()
        self.pool = ThreadPoolExecutor(effective_n_jobs(jobs)) if threads else None
        self._blas: Any = None  # threadpoolctl's limits while the pool runs

    def __enter__(self) -> _Fits:
        if self.pool is not None:
            from threadpoolctl import threadpool_limits

            self._blas = threadpool_limits(1, user_api="blas")
        return self

    def __exit__(self, *failure) -> None:
        if self.pool is not None:  # after a failure, what is still queued is dropped
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._blas.restore_original_limits()

    def submit(self, fits: list[tuple[Callable, float, _Part]]) -> list[Future]:
        """Every (model factory, C, part) fit (`_fit`), as futures in the order given."""
        order = sorted(range(len(fits)), key=lambda i: -fits[i][1])
        futures: list[Future] = [Future() for _ in fits]
        if self.pool is not None:
            for i in order:
                futures[i] = self.pool.submit(_fit, fits[i][0](fits[i][1]), fits[i][2])
            return futures
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=self.jobs)(delayed(_fit)(fits[i][0](fits[i][1]), fits[i][2]) for i in order)
        for i, result in zip(order, done):
            futures[i].set_result(result)
        return futures

    def then(self, task: Callable[[], object]) -> Future:
        """``task`` queued behind the fits submitted so far (run at once without threads)."""
        if self.pool is not None:
            return self.pool.submit(task)
        future: Future = Future()
        future.set_result(task())
        return future


def fold_mean(scores: np.ndarray, statistic: Callable = np.mean) -> float:
    """The mean (or another ``statistic``) of a setting's CV scores; NaN without CV (`Folds.NONE`)."""
    return float(statistic(scores)) if len(scores) else float("nan")


def grid_search(
    make_model: Callable[[float], Pipeline],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: GridConfig,
    n_classes: int,
    in_span: bool = True,
) -> GridResult:
    """Choose C by stratified k-fold CV on `train`; then fit every C on all of `train` and score `test` (None:
    no test split, as in `estimator.LinearProbe.fit`).

    With ``in_span`` (and a model that allows it, `span_fit`) every fit runs in the span of the
    training rows (`SpanProjection`); the models returned work on the original features either way.
    """
    x_train, y_train = train
    check_training_data(x_train, y_train)
    begun = time.perf_counter()
    folds = cv_folds(config, y_train)
    setup = _Setup.of(make_model, train, folds, in_span)
    parts = [setup.part(fit, held_out) for fit, held_out in folds]
    whole = setup.part()
    # One flat pool of (C, fold) fits plus the final fit of each C keeps every core busy.
    with _Fits(config.jobs, threads=setup.span is not None) as fits:
        fitted = [f.result() for f in fits.submit([(setup.make_fit, c, part) for c in config.c_grid for part in parts]
                                                  + [(setup.make_fit, c, whole) for c in config.c_grid])]
    n_cv = len(config.c_grid) * len(folds)
    cv_scores = [np.array(fitted[i * len(folds) : (i + 1) * len(folds)]) for i in range(len(config.c_grid))]
    cv_mean = [fold_mean(s) for s in cv_scores]
    chosen = int(np.argmax(cv_mean))  # first maximum: the smallest C among ties
    on_rows = setup.on_rows(fitted[n_cv:])
    fit_seconds = time.perf_counter() - begun
    models = setup.original_models(on_rows)
    return GridResult(
        grid=list(config.c_grid),
        cv_mean=cv_mean,
        cv_std=[fold_mean(s, np.std) for s in cv_scores],
        chosen=config.c_grid[chosen],
        model=models[chosen],
        fit_seconds=fit_seconds,
        **scored_on_test(test, lambda x_test: setup.test_predictions(on_rows, x_test), chosen, n_classes),
    )


def scored_on_test(test: tuple[Any, np.ndarray] | None, predict: Callable[[Any], list[np.ndarray]], chosen: int,
                n_classes: int) -> dict[str, Any]:
    """A search's `GridResult` fields on the test split: each setting's accuracy (``predict``: every setting's
    predictions), the chosen one's per-class scores, confusion and right/wrong per image; empty without one."""
    if test is None:
        return {"test_per_setting": [], "test_accuracy": float("nan"), "per_class_accuracy": [], "confusion": [],
                "test_correct": ""}
    x_test, y_test = test
    predictions = predict(x_test)
    per_class, confusion = per_class_summary(y_test, predictions[chosen], n_classes)
    accuracies = [float(np.mean(predicted == y_test)) for predicted in predictions]
    return {"test_per_setting": accuracies, "test_accuracy": accuracies[chosen], "per_class_accuracy": per_class,
            "confusion": confusion, "test_correct": correctness(y_test, predictions[chosen])}


def split_accuracies(models: dict[str, Callable], x, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                     config: GridConfig, in_span: bool = True) -> list[float]:
    """The test accuracy, on each re-drawn (train, test) split of the rows ``x``, of the candidate and C
    that `choose_by_cv` would choose on its training part. Only that one final model is fitted: a
    re-drawn split reports the chosen model's accuracy, not a per-C curve.

    The splits overlap (`_Fits`): while one split's fits run, the next split's Gram matrix and fold
    coordinates are computed and its CV fits queued; a split's final fit and test predictions are queued
    once its CV scores are in, so no core waits for one split's last fit."""
    folds = [cv_folds(config, y[train_rows]) for train_rows, _ in splits]
    threads = in_span and all(span_fit(make, (len(rows), x.shape[1]), fewest_fit_rows(split_folds, len(rows)))
                              for make in models.values() for (rows, _), split_folds in zip(splits, folds))
    with _Fits(config.jobs, threads=threads) as fits:
        finals: list[Future] = []
        previous = None
        for (train_rows, test_rows), split_folds in zip(splits, folds):
            current = _RedrawnSplit.start(fits, models, x, y, config, in_span,
                                          train_rows=train_rows, test_rows=test_rows, folds=split_folds)
            if previous is not None:
                finals.append(previous.final(fits))
            previous = current
        if previous is not None:
            finals.append(previous.final(fits))
        return [f.result() for f in finals]


@dataclass
class _RedrawnSplit:
    """One re-drawn split in flight: its candidates' fit setups and their CV scores (futures)."""

    setups: list[_Setup]
    scores: list[Future]
    config: GridConfig
    test: tuple[Any, np.ndarray, np.ndarray]  # all rows, all labels, the test rows (sliced when scored)

    @classmethod
    def start(cls, fits: _Fits, models: dict[str, Callable], x, y, config: GridConfig, in_span: bool, *,
              train_rows: np.ndarray, test_rows: np.ndarray, folds: list) -> _RedrawnSplit:
        train = (x[train_rows], y[train_rows])
        check_training_data(*train)
        setups = [_Setup.of(make, train, folds, in_span) for make in models.values()]
        scores = fits.submit([(setup.make_fit, c, setup.part(fit, held_out)) for setup in setups
                              for c in config.c_grid for fit, held_out in folds])
        return cls(setups, scores, config, (x, y, test_rows))

    def final(self, fits: _Fits) -> Future:
        """Once the CV scores are in: the chosen candidate and C fitted on the whole training part and
        scored on the test part, queued."""
        c_grid = self.config.c_grid
        cv_mean = np.array([f.result() for f in self.scores]).reshape(len(self.setups), len(c_grid), -1).mean(axis=2)
        best = int(np.argmax(cv_mean.max(axis=1)))  # the first candidate among ties, as `choose_by_cv`
        setup, c = self.setups[best], c_grid[int(np.argmax(cv_mean[best]))]

        def test_accuracy() -> float:
            x, y, test_rows = self.test
            (predicted,) = setup.test_predictions(setup.on_rows([_fit(setup.make_fit(c), setup.part())]), x[test_rows])
            return float(np.mean(predicted == y[test_rows]))

        return fits.then(test_accuracy)


def redraw_splits(labels: np.ndarray, train_per_class: int, count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 15-Scene protocol's repeated random splits: `train_per_class` per class for training, the rest test."""
    splits = []
    for k in range(count):
        rng = np.random.default_rng(seed + k)
        train_idx = []
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            if len(members) <= train_per_class:
                raise UserError(f"class {cls} has {len(members)} images in all, not more than {train_per_class}")
            train_idx.append(rng.choice(members, train_per_class, replace=False))
        train_mask = np.zeros(len(labels), dtype=bool)
        train_mask[np.concatenate(train_idx)] = True
        splits.append((np.flatnonzero(train_mask), np.flatnonzero(~train_mask)))
    return splits
