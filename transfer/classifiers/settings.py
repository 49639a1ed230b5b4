"""The settings of the probes' searches (an SVM's C, k-NN's k and T), apart from the fitting code: light to import, so that the CLI's
options and the study sections take their defaults from here (`--help` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from transfer.core.choices import Folds, Norm, Probe
from transfer.core.config import ConfigError, choice, require

DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
COMBINED = "+"  # joins the layer keys of an SVM on several layers side by side: "conv_head:max+avgpool"
DEFAULT_NORMS = (Norm.L2,)  # the feature normalisations CV chooses among: one, so no choice


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """The C grid searched by stratified k-fold CV on the training split (few-shot subsets: `Folds`)."""

    c_grid: tuple[float, ...] = DEFAULT_C_GRID  # kept sorted and deduplicated
    cv: int = 5
    jobs: int = -1
    seed: int = 0
    splits: int = 1  # > 1: also this many re-drawn train/test splits, reported as mean ± std
    folds: Folds = Folds.KFOLD

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_grid", check_c_grid(self.c_grid))
        require(self.cv >= 2, "cv", f"cv must be at least 2 folds, got {self.cv}")
        require(self.folds != Folds.NONE or len(self.c_grid) == 1, "c_grid", "without CV there is nothing to choose "
                                                                             "among: give one C")
        require(self.splits >= 1, "splits", f"splits must be at least 1, got {self.splits}")
        check_jobs(self.jobs)


DEFAULT_PROBES = (Probe.SVM,)
DEFAULT_K_GRID = (1, 2, 5, 10, 20, 50, 100, 200)  # neighbours: DINO's k-NN evaluation reports k=20; few-shot subsets need the small ones
DEFAULT_TEMPERATURES = (0.02, 0.07, 0.2)  # DINO's T is 0.07


@dataclass(frozen=True, kw_only=True)
class KnnGrid:
    """The k-NN settings CV chooses among: every k with every temperature T (votes weigh exp(similarity / T))."""

    k_grid: tuple[int, ...] = DEFAULT_K_GRID  # kept sorted and deduplicated
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES

    def __post_init__(self) -> None:
        bad = [k for k in self.k_grid if isinstance(k, bool) or not isinstance(k, int) or k < 1]
        require(bool(self.k_grid) and not bad, "k_grid", f"k must be a whole number of neighbours, 1 or more, got "
                                                         f"{', '.join(map(repr, bad)) or 'none'}")
        bad_t = [t for t in self.temperatures if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0]
        require(bool(self.temperatures) and not bad_t, "temperatures",
                f"a temperature must be a positive number, got {', '.join(map(repr, bad_t)) or 'none'}")
        object.__setattr__(self, "k_grid", tuple(sorted(set(self.k_grid))))
        object.__setattr__(self, "temperatures", tuple(sorted({float(t) for t in self.temperatures})))


# The fixed settings of a subset with one image per class, where no CV is possible: scikit-learn's default C
# for the linear probes, the nearest neighbour for k-NN (with one row per class, any k and T vote as k=1 does).
FIXED_C = 1.0
FIXED_KNN = KnnGrid(k_grid=(1,), temperatures=(DEFAULT_TEMPERATURES[1],))
DEFAULT_SHOTS = (1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True, kw_only=True)
class FewShotConfig:
    """A few-shot curve: for each shot count and seed, that many training images per class drawn at random."""

    shots: tuple[int, ...] = DEFAULT_SHOTS  # images per class; kept sorted and deduplicated
    seeds: int = 5  # subsets per shot count: seeds 0, 1, ...

    def __post_init__(self) -> None:
        bad = [n for n in self.shots if isinstance(n, bool) or not isinstance(n, int) or n < 1]
        require(bool(self.shots) and not bad, "shots", f"a shot count is a whole number of images per class, 1 or more, "
                                                       f"got {', '.join(map(repr, bad)) or 'none'}")
        require(self.seeds >= 1, "seeds", f"seeds must be at least 1, got {self.seeds}")
        object.__setattr__(self, "shots", tuple(sorted(set(self.shots))))


def subset_grid(grid: GridConfig, knn: KnnGrid, shots: int) -> tuple[GridConfig, KnnGrid]:
    """The CV inside a subset of ``shots`` images per class, never the test split: ``grid.cv`` stratified folds
    where every class has that many, else leave-one-out, else (one image per class) the fixed settings."""
    if shots >= grid.cv:
        return replace(grid, splits=1), knn
    if shots >= 2:
        return replace(grid, splits=1, folds=Folds.LEAVE_ONE_OUT), knn
    return replace(grid, splits=1, folds=Folds.NONE, c_grid=(FIXED_C,)), FIXED_KNN


def parse_knn_grid(k_grid: str, temperatures: str) -> KnnGrid:
    """"10,20", "0.07" → the `KnnGrid` of those k and T."""
    return KnnGrid(k_grid=parse_numbers(k_grid, "k_grid", "k grid", "10,20,50", int),
                   temperatures=parse_numbers(temperatures, "temperatures", "temperatures", "0.02,0.07"))


def parse_probes(text: str) -> tuple[Probe, ...]:
    """"svm,knn" → (Probe.SVM, Probe.KNN), in the order given."""
    probes = tuple(dict.fromkeys(choice(Probe, name.strip(), "probe") for name in text.split(",") if name.strip()))
    require(bool(probes), "probe", f"no probe given: name at least one of {', '.join(Probe)}")
    return probes


def parse_numbers(text: str, field: str, what: str, example: str, kind: type = float) -> tuple:
    """"10,20" → (10, 20) of ``kind``; anything else says what was expected (``what``, e.g. "C grid")."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        whole = " whole" if kind is int else ""
        raise ConfigError(field, f"{what} {text!r}: expected comma-separated{whole} numbers, e.g. {example}") from None


def check_jobs(jobs: int) -> None:
    require(jobs != 0, "jobs", "jobs must be a number of processes (1, 2, …) or -1 for all cores (-2: all but one), not 0")


def parse_c_grid(text: str) -> tuple[float, ...]:
    return parse_numbers(text, "c_grid", "C grid", "0.001,0.01,0.1")


def check_c_grid(values) -> tuple[float, ...]:
    """Sorted, deduplicated positive C values (the order a grid is searched and stored in)."""
    require(bool(values), "c_grid", "the C grid is empty: give at least one C, e.g. 0.001,0.01,0.1")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not np.isfinite(v)]
    require(not bad, "c_grid", f"C must be a positive number, got {', '.join(map(repr, bad))}")
    return tuple(sorted({float(v) for v in values}))


def parse_norms(text: str) -> tuple[Norm, ...]:
    """"l2,power" → (Norm.L2, Norm.POWER): the normalisations the CV chooses among, in the order given."""
    norms = tuple(dict.fromkeys(choice(Norm, name.strip(), "norm") for name in text.split(",") if name.strip()))
    require(bool(norms), "norm", "no normalisation given: name at least one, e.g. l2")
    return norms
