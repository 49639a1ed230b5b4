"""The settings of an SVM's C search, apart from the fitting code: light to import, so that the CLI's
options and the study sections take their defaults from here (`--help` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transfer.core.choices import Norm
from transfer.core.config import ConfigError, choice, require

DEFAULT_C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
COMBINED = "+"  # joins the layer keys of an SVM on several layers side by side: "conv_head:max+avgpool"
DEFAULT_NORMS = (Norm.L2,)  # the feature normalisations CV chooses among: one, so no choice


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """The C grid searched by stratified k-fold CV on the training split."""

    c_grid: tuple[float, ...] = DEFAULT_C_GRID  # kept sorted and deduplicated
    cv: int = 5
    jobs: int = -1
    seed: int = 0
    splits: int = 1  # > 1: also this many re-drawn train/test splits, reported as mean ± std

    def __post_init__(self) -> None:
        object.__setattr__(self, "c_grid", check_c_grid(self.c_grid))
        require(self.cv >= 2, "cv", f"cv must be at least 2 folds, got {self.cv}")
        require(self.splits >= 1, "splits", f"splits must be at least 1, got {self.splits}")
        check_jobs(self.jobs)


def check_jobs(jobs: int) -> None:
    require(jobs != 0, "jobs", "jobs must be a number of processes (1, 2, …) or -1 for all cores (-2: all but one), not 0")


def parse_c_grid(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError("c_grid", f"C grid {text!r}: expected comma-separated numbers, e.g. 0.001,0.01,0.1") from None


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
