"""Reports from the results store: one row per configuration, figures, and Markdown/HTML/CSV files.

Only what the store holds is shown; published reference points are drawn apart and labelled as such.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from transfer.classifiers.metrics import class_mean_accuracy, over_seeds, tally
from transfer.core.choices import Method
from transfer.core.errors import UserError
from transfer.core.files import atomic_path, atomic_write_text
from transfer.features.backbones import shown_pooling
from transfer.runs.labels import ProbeLabel, run_label
from transfer.runs.store import RunRecord


@dataclass(frozen=True)
class Published:
    """A figure from the literature: shown beside measured rows of the same data set, never mixed with them."""

    name: str
    accuracy: float
    source: str
    conditions: str


LAZEBNIK_2006 = "Lazebnik, Schmid & Ponce, Beyond Bags of Features, CVPR 2006"
LAZEBNIK_PROTOCOL = ("100 training images per class, the rest for test, mean of 10 random splits; dense SIFT, "
                     "histogram-intersection kernel SVM, images at their original resolution")
PUBLISHED_15SCENE = (
    Published("BoW + SIFT (published)", 0.74, f"{LAZEBNIK_2006}, single level (L = 0), about 74%", LAZEBNIK_PROTOCOL),
    Published("Spatial pyramid L2 (published)", 0.814, f"{LAZEBNIK_2006}, 200 words, L = 2", LAZEBNIK_PROTOCOL),
    Published("VGG16 relu7 + linear SVM (published)", 0.89,
              "literature value for ImageNet VGG16 fc7 features (reproductions report 86-89%)",
              "100 training images per class; 224-pixel centre crops; a linear SVM on the 4,096 activations"),
)
# 15-Scene's classes, as folder names usually spell them once the source prefixes are dropped.
FIFTEEN_SCENE = frozenset({"bedroom", "suburb", "industrial", "kitchen", "livingroom", "coast", "forest", "highway",
                           "insidecity", "mountain", "opencountry", "street", "tallbuilding", "office", "store"})


def _plain_class(name: str) -> str:
    name = name.lower().replace(" ", "").replace("_", "")
    return next((name[len(p):] for p in ("mit", "cal", "par") if name.startswith(p) and name[len(p):]), name)


PUBLISHED_TRAIN_PER_CLASS = 100  # the protocol of every published 15-Scene figure


def _on_15scene(row: Row) -> bool:
    return {_plain_class(c) for c in row.run.classes} == FIFTEEN_SCENE


def published_for(rows: list[Row]) -> tuple[Published, ...]:
    """The published reference points that apply: 15-Scene's, only when every row is on 15-Scene with its
    published protocol (100 training images per class)."""
    same = rows and all(_on_15scene(row) and row.train_per_class == (PUBLISHED_TRAIN_PER_CLASS,) * 2 for row in rows)
    return PUBLISHED_15SCENE if same else ()


def published_withheld(rows: list[Row]) -> str | None:
    """Why 15-Scene's published figures are not shown beside rows on 15-Scene; None when they are, or
    when no row is on 15-Scene."""
    if published_for(rows) or not any(_on_15scene(row) for row in rows):
        return None
    return (f"published 15-Scene figures not shown: they are for {PUBLISHED_TRAIN_PER_CLASS} training images per "
            f"class, and not every row here is (see the data column); a study's own report holds only its runs")

FIGURES = ("accuracy_vs_c", "best_by_method", "scratch_vs_transfer", "confusion", "per_class", "training_curves", "throughput",
           "fewshot")
TRANSFER_METHODS = ("svm", "head")


@dataclass
class Row:
    """One configuration: the latest run of it in the store."""

    run: RunRecord
    label: str  # what the bar chart and the curves call it
    best: bool = False  # the headline: chosen on training data only (`_by_training_score`)
    vs_headline: float | None = None  # McNemar's exact p against the headline on the same test images

    @property
    def train_per_class(self) -> tuple[int, int] | None:
        """(fewest, most) training images of a class; runs stored before this was recorded: from the
        training total where it divides evenly among the classes, else None."""
        config = self.run.config or {}
        if config.get("train_per_class"):
            low, high = config["train_per_class"]
            return int(low), int(high)
        total = (config.get("images") or {}).get("train")
        if total and self.run.classes and total % len(self.run.classes) == 0:
            return (total // len(self.run.classes),) * 2
        return None

    @property
    def data_label(self) -> str:
        """Which data the row came from: the folder's name and its training images per class."""
        name = Path(self.run.dataset).name or self.run.dataset
        per_class = self.train_per_class
        if per_class is None:
            return name
        low, high = per_class
        return f"{name}, {low if low == high else f'{low}–{high}'} train/class"

    @property
    def test_correct(self) -> str:
        return (self.run.config or {}).get("test_correct", "")

    @property
    def chosen_at_grid_edge(self) -> bool:
        """A C chosen at either end of its grid: the best C may lie beyond it (widen the grid)."""
        grid = self.run.c_grid or []
        return len(grid) > 1 and self.run.chosen in (min(grid), max(grid))

    @property
    def test_images(self) -> int | None:
        """How many test images the test accuracy counts (from the confusion matrix)."""
        return int(sum(map(sum, self.run.confusion))) if self.run.confusion else None

    @property
    def test_interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the test accuracy on the dataset's own split (None without counts)."""
        from scipy.stats import binomtest

        n, confusion = self.test_images, self.run.confusion
        if not n or confusion is None:
            return None
        correct = int(sum(confusion[i][i] for i in range(len(confusion))))
        interval = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
        return float(interval.low), float(interval.high)

    @property
    def class_mean_accuracy(self) -> float | None:
        return class_mean_accuracy(self.run.per_class_accuracy, self.run.confusion)

    @property
    def fit_seconds(self) -> float | None:
        """The training stage's seconds; None where it reused another run's search (a few-shot subset every
        seed draws alike)."""
        if not self.run.timings or self.run.timings.get("searched") is False:
            return None
        return self.run.timings.get("fit_seconds")

    @property
    def extract_seconds(self) -> float | None:
        timings = self.run.timings or {}
        if "extract_seconds" in timings:
            return timings["extract_seconds"]
        # BoW and Fisher feature stages; "descriptors" only in runs stored while SIFT had its own stage
        stages = [timings.get(k) for k in ("descriptors", "vocabulary", "encoding", "histograms", "kernel_map")]
        return sum(s for s in stages if s is not None) if any(s is not None for s in stages) else None

    @property
    def chosen(self) -> str:
        return self.run.chosen_text

    @property
    def classifier(self) -> str:
        return run_label(self.run).classifier


def _configuration(run: RunRecord) -> str:
    config = {k: v for k, v in (run.config or {}).items() if k not in ("split_accuracies", "key", "test_correct")}
    return json.dumps([run.method, run.dataset_fingerprint, run.backbone, run.weights, run.pooling, run.layer,
                       run.precision, run.splits, config], sort_keys=True, default=str)


def _by_training_score(row: Row) -> tuple[bool, float]:
    """What a choice among configurations may look at: the training-side score, never the test split.
    A k-fold CV mean comes before a hold-out score: the best epoch's accuracy on a small hold-out part
    is a maximum over epochs and settings, biased upwards, so the two are not compared as equals."""
    score = row.run.cv_best if row.run.cv_best is not None else float("-inf")
    return Method(row.run.method).cross_validated, score


def _latest_rows(runs: list[RunRecord]) -> list[Row]:
    """The latest run of each configuration, labelled (with its data where the runs span several data sets)."""
    latest: dict[str, RunRecord] = {}
    for run in runs:  # runs come in insertion order: later ones replace earlier ones
        latest[_configuration(run)] = run
    rows = [Row(run, run_label(run).title) for run in latest.values()]
    if len({row.run.dataset_fingerprint for row in rows}) > 1:  # rows of several data sets: say which is which
        for row in rows:
            row.label += f" · {row.data_label}"
    return rows


def configuration_rows(runs: list[RunRecord], best_only: bool = False) -> list[Row]:
    """The latest run of each configuration on a whole training split (few-shot subsets: `fewshot_curves`);
    the headline (best training-side score) marked."""
    rows = _latest_rows([run for run in runs if run.method != Method.FEWSHOT])
    scored = [row for row in rows if row.run.cv_best is not None]
    if not scored:
        return [] if best_only else rows
    best = max(scored, key=_by_training_score)  # the first among ties
    best.best = True
    for row in rows:
        if row is not best and row.run.dataset_fingerprint == best.run.dataset_fingerprint:
            row.vs_headline = mcnemar_p(best.test_correct, row.test_correct)
    return [best] if best_only else rows


@dataclass(frozen=True)
class FewShotSeries:
    """One few-shot curve (a probe on one layer of one data set): per shot count, its seeds' rows."""

    label: str
    points: dict[int, list[Row]]  # shots per class -> one row per seed, in shot order

    def over_seeds(self, shots: int) -> tuple[float, float]:
        return over_seeds([row.run.test_accuracy for row in self.points[shots]])

    def chosen(self, shots: int) -> str:
        """The settings the seeds' CV chose ("" for a probe without settings)."""
        return tally([row.chosen for row in self.points[shots] if row.chosen])


def fewshot_curves(runs: list[RunRecord]) -> tuple[list[Row], list[FewShotSeries]]:
    """The few-shot runs' latest rows (one per subset) and the curves they make."""
    rows = _latest_rows([run for run in runs if run.method == Method.FEWSHOT])
    series: dict[str, dict[int, list[Row]]] = {}
    for row in rows:
        label = run_label(row.run)
        assert isinstance(label, ProbeLabel)  # few-shot runs are probes'
        data = f" · {Path(row.run.dataset).name}" if len({r.run.dataset_fingerprint for r in rows}) > 1 else ""
        series.setdefault(replace(label, shots=0).title + data, {}).setdefault(label.shots, []).append(row)
    return rows, [FewShotSeries(name, dict(sorted(points.items()))) for name, points in series.items()]


def mcnemar_p(first: str, second: str) -> float | None:
    """McNemar's exact test of two classifiers on the same test images (each "1"/"0" per image, in the
    same order): the two-sided p of the images only one of them got right. None when not comparable."""
    from scipy.stats import binomtest

    if not first or len(first) != len(second):
        return None
    only_first = sum(a == "1" and b == "0" for a, b in zip(first, second))
    only_second = sum(a == "0" and b == "1" for a, b in zip(first, second))
    if only_first + only_second == 0:
        return 1.0
    return float(binomtest(min(only_first, only_second), only_first + only_second, 0.5).pvalue)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def training_score_cells(run: RunRecord) -> tuple[str, str]:
    """The training-side score under "CV %" (k-fold CV) or "val %" (hold-out), never both."""
    score = _pct(run.cv_best)
    return (score, "") if Method(run.method).cross_validated else ("", score)


def table_cells(row: Row, mark: bool = True) -> list[str]:
    """The row's cells under `HEADERS`; ``mark`` puts ★ before the headline's name (not in CSV data)."""
    run = row.run
    test = _pct(run.test_accuracy) + (f" ± {_pct(run.test_std)}" if run.test_std is not None else "")
    interval = row.test_interval
    p = row.vs_headline
    return [
        ("★ " if row.best and mark else "") + row.label, row.data_label, run.method, run.backbone or "", run.weights or "",
        shown_pooling(run.backbone, run.pooling), run.layer or "", row.classifier,
        row.chosen + (" (grid edge)" if row.chosen_at_grid_edge else ""), *training_score_cells(run), test,
        f"{100 * interval[0]:.1f}–{100 * interval[1]:.1f}" if interval else "", _pct(row.class_mean_accuracy),
        "—" if row.best else "" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}") + (" *" if p < 0.05 else ""),
        str(run.splits), _seconds(row.extract_seconds), _seconds(row.fit_seconds),
    ]


HEADERS = ["configuration", "data", "method", "backbone", "weights", "pooling", "layer", "classifier", "chosen",
           "CV %", "val %", "test %", "test 95% CI", "class mean %", "vs ★ p", "splits", "extract s", "fit s"]


NUMERIC_HEADERS = frozenset(h for h in HEADERS if h.endswith(("%", " s", "CI", " p")) or h in ("splits", "chosen"))


def reference_cells(name: str, accuracy: float) -> list[str]:
    """A published figure as a row under `HEADERS`: its name and test accuracy, nothing measured."""
    return [name if header == "configuration" else f"{100 * accuracy:.1f}" if header == "test %" else ""
            for header in HEADERS]


HEADLINE_RULE = ("★ marks the headline, chosen on training data only: the best 'CV %' (k-fold cross-validation "
                 "on the training split), or the best 'val %' (the best epoch on a hold-out part of it) where no "
                 "configuration is cross-validated: a hold-out maximum over epochs runs high. Every "
                 "configuration's test accuracy is shown with its 95% interval (Wilson, over the test images) and "
                 "the mean of its per-class accuracies. 'vs ★ p' is McNemar's exact test against the headline on the "
                 "same test images; * marks p < 0.05, a difference these test images show as significant. A C "
                 "chosen at the edge of its grid is marked: the best C may lie beyond it. 'fit s' is the whole "
                 "training stage (every C and fold, every setting tried).")


# ------------------------------------------------------------------------------------- figures

def _figure_accuracy_vs_c(rows: list[Row], path: Path) -> bool:
    import matplotlib.pyplot as plt

    curves = [r for r in rows if r.run.c_grid and r.run.test_accuracy_per_c]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for row in curves:
        grid, tests, cvs = row.run.c_grid or [], row.run.test_accuracy_per_c or [], row.run.cv_accuracy or []
        line, = ax.plot(grid, [100 * a for a in tests], marker="o", label=f"{row.label}: test")
        ax.plot(grid, [100 * a for a in cvs], marker="x", linestyle="--", color=line.get_color(), label=f"{row.label}: CV")
        chosen = grid.index(row.run.chosen) if row.run.chosen in grid else None
        if chosen is not None:
            ax.scatter([row.run.chosen], [100 * tests[chosen]], s=120, facecolors="none",
                       edgecolors=line.get_color(), linewidths=2)
            if row.chosen_at_grid_edge:
                ax.annotate("chosen at the grid's edge", (row.run.chosen, 100 * tests[chosen]),
                            textcoords="offset points", xytext=(-10, 10), ha="right", fontsize=7, color=line.get_color())
    return _save_log_x(fig, ax, path, "C (log scale); circle = C chosen by CV on the training split", "accuracy (%)",
                       "Accuracy against C: test (solid) and cross-validation (dashed)")


def _save_log_x(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, ticks: list | None = None) -> bool:
    """A figure of curves against a log x axis (at ``ticks`` where given), labelled, its legend outside."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    if ticks is not None:  # only these, no minor ticks between them
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
    # Plain tick labels: the log axis writes mathtext ("$10^{-3}$"), which stays off for user-written labels.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as partial:
        fig.savefig(partial, format="png", dpi=120, bbox_inches="tight")  # keeps legends placed outside the axes
    plt.close(fig)
    return True


def _bar_chart(path: Path, labels: list[str], values: list[float], title: str, xlabel: str, colors,
               errors: list[float] | None = None, hatches: list[str] | None = None, xlim: float | None = None) -> bool:
    """Horizontal bars, each with its value written beside it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.6))
    bars = ax.barh(labels, values, xerr=errors, color=colors, edgecolor="black")
    for bar, hatch, value in zip(bars, hatches or [""] * len(bars), values):
        bar.set_hatch(hatch)
        ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:.1f}", va="center", fontsize=8)
    if xlim:
        ax.set_xlim(0, xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)


def _figure_best_by_method(rows: list[Row], path: Path, published: bool) -> bool:
    if not rows:  # few-shot curves only
        return False
    best: dict[str, Row] = {}
    for row in rows:  # a label shared by several rows (other data sets): the one chosen on training data
        if row.label not in best or _by_training_score(row) > _by_training_score(best[row.label]):
            best[row.label] = row
    ordered = sorted(best.values(), key=lambda r: r.run.test_accuracy)
    references = published_for(rows) if published else ()
    return _bar_chart(
        path,
        labels=[r.label for r in ordered] + [p.name for p in references],
        values=[100 * r.run.test_accuracy for r in ordered] + [100 * p.accuracy for p in references],
        errors=[100 * (r.run.test_std or 0) for r in ordered] + [0] * len(references),
        colors=["tab:blue"] * len(ordered) + ["lightgray"] * len(references),
        hatches=[""] * len(ordered) + ["//"] * len(references),
        title="Test accuracy per method (where a method has several rows: the one chosen on training data)",
        xlabel="test accuracy (%)" + ("\ngrey hatched bars: published figures, not measured here" if published else ""),
        xlim=105,
    )


def _figure_scratch_vs_transfer(rows: list[Row], path: Path) -> bool:
    """Every from-scratch row (ladder steps in order) beside the best transfer row on the same data."""
    from_scratch = [r for r in rows if r.run.method == "scratch"]
    if not from_scratch:
        return False
    datasets = {r.run.dataset_fingerprint for r in from_scratch}
    transfer = [r for r in rows if r.run.method in TRANSFER_METHODS and r.run.dataset_fingerprint in datasets]
    best = [max(transfer, key=_by_training_score)] if transfer else []
    shown = list(reversed(from_scratch)) + best  # barh draws bottom-up: the ladder reads top-down
    return _bar_chart(
        path, labels=[r.label for r in shown], values=[100 * r.run.test_accuracy for r in shown],
        colors=["tab:purple"] * len(from_scratch) + ["tab:blue"] * len(best), xlim=105,
        title="From scratch (purple, each step adds one change) vs the best transfer configuration (blue)",
        xlabel="test accuracy (%), same dataset",
    )


def _figure_confusion(row: Row, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    if not row.run.confusion:
        return False
    matrix = np.array(row.run.confusion, dtype=float)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    classes = row.run.classes
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    image = ax.imshow(100 * normalised, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = 100 * np.trace(matrix) / max(matrix.sum(), 1)  # of this split, also when the row is a mean over splits
    ax.set_title(f"Confusion matrix on the test split (counts; colour = % of the true class)\n{row.label}: {accuracy:.2f}%")
    fig.colorbar(image, ax=ax, fraction=0.046, label="% of true class")
    return _save(fig, path)


def _figure_per_class(row: Row, path: Path) -> bool:
    if not row.run.per_class_accuracy:
        return False
    pairs = sorted(zip(row.run.classes, row.run.per_class_accuracy), key=lambda p: p[1])
    return _bar_chart(path, [p[0] for p in pairs], [100 * p[1] for p in pairs], colors="tab:green", xlim=108,
                      title=f"Per-class accuracy on the test split: {row.label}", xlabel="test accuracy (%)")


def _figure_training_curves(rows: list[Row], path: Path) -> bool:
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r.run.curves]
    if not trained:
        return False
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for row in trained:
        curves = row.run.curves or {}
        epochs = range(1, len(curves["train_loss"]) + 1)
        line, = loss_ax.plot(epochs, curves["train_loss"], label=row.label)
        loss_ax.plot(epochs, curves["val_loss"], linestyle="--", color=line.get_color())
        acc_ax.plot(epochs, [100 * a for a in curves["train_acc"]], color=line.get_color())
        acc_ax.plot(epochs, [100 * a for a in curves["val_acc"]], linestyle="--", color=line.get_color())
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss (solid: train, dashed: validation)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (solid: train, dashed: validation)")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, ncol=1 if len(trained) > 4 else 2)
    return _save(fig, path)


def _figure_fewshot(curves: list[FewShotSeries], path: Path) -> bool:
    import matplotlib.pyplot as plt

    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5))
    shown: set[int] = set()
    for curve in curves:
        shots = list(curve.points)
        means, spreads = zip(*(curve.over_seeds(n) for n in shots))
        low, high = ([100 * (m + sign * s) for m, s in zip(means, spreads)] for sign in (-1, 1))
        seeds = max(len(rows) for rows in curve.points.values())
        line, = ax.plot(shots, [100 * m for m in means], marker="o", label=f"{curve.label} ({seeds} seeds)")
        ax.fill_between(shots, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        shown.update(shots)
    return _save_log_x(fig, ax, path, "training images per class (log scale); settings chosen by CV inside each subset",
                       "test accuracy (%)",
                       "Few-shot: test accuracy against training images per class (mean over seeds; band: ± std)",
                       ticks=sorted(shown))  # the shot counts measured


def _figure_throughput(rows: list[Row], path: Path) -> bool:
    speeds: dict[str, float] = {}
    for row in rows:
        rate = (row.run.timings or {}).get("extract_images_per_s")
        if rate:
            pooling = shown_pooling(row.run.backbone, row.run.pooling)
            key = f"{row.run.backbone} {row.run.precision}" + (f" {pooling}-pool" if pooling else "")
            speeds[key] = max(speeds.get(key, 0.0), rate)
    if not speeds:
        return False
    names = sorted(speeds, key=lambda name: speeds[name])
    return _bar_chart(path, names, [speeds[n] for n in names], colors="tab:orange",
                      title="Extraction throughput (backbone, precision, pooling)",
                      xlabel="images per second (network pass, as extracted)")


# --------------------------------------------------------------------------------------- files

@dataclass
class ReportFiles:
    directory: Path
    markdown: Path
    html: Path
    csv: Path
    figures: dict[str, Path]


def write_report(runs: list[RunRecord], directory: Path, published: bool = True) -> ReportFiles:
    import matplotlib

    matplotlib.use("Agg")
    rows = configuration_rows(runs)
    subsets, curves = fewshot_curves(runs)
    if not rows and not subsets:
        raise UserError("no runs to report: the results store is empty or the filters match nothing")
    directory.mkdir(parents=True, exist_ok=True)
    best = next((r for r in rows if r.best), None)  # None: no row has a CV / validation score
    makers = {
        "accuracy_vs_c": lambda p: _figure_accuracy_vs_c(rows, p),
        "best_by_method": lambda p: _figure_best_by_method(rows, p, published),
        "scratch_vs_transfer": lambda p: _figure_scratch_vs_transfer(rows, p),
        "confusion": lambda p: best is not None and _figure_confusion(best, p),
        "per_class": lambda p: best is not None and _figure_per_class(best, p),
        "training_curves": lambda p: _figure_training_curves(rows, p),
        "throughput": lambda p: _figure_throughput(rows, p),
        "fewshot": lambda p: _figure_fewshot(curves, p),
    }
    figures = {}
    # Labels are class and run names as users wrote them: "$x^$" is text, not mathtext to parse.
    with matplotlib.rc_context({"text.parse_math": False}):
        for name in FIGURES:
            path = directory / f"{name}.png"
            if makers[name](path):
                figures[name] = path
            elif path.exists():
                path.unlink()  # a figure from an older report that no longer applies
    csv_path = directory / "results.csv"
    with atomic_path(csv_path) as partial, open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "created", "dataset", "headline", *HEADERS])
        for row in rows + subsets:  # every few-shot subset: a row of its own, with its interval
            writer.writerow([row.run.id, row.run.created, row.run.dataset, int(row.best), *table_cells(row, mark=False)])
    markdown = directory / "report.md"
    atomic_write_text(markdown, _markdown(rows, curves, figures, published))
    page = directory / "report.html"
    atomic_write_text(page, _html(rows, curves, figures, published))
    return ReportFiles(directory, markdown, page, csv_path, figures)


CAPTIONS = {
    "accuracy_vs_c": "Test and cross-validation accuracy against C",
    "best_by_method": "Test accuracy per method",
    "confusion": "Confusion matrix of the headline configuration",
    "per_class": "Per-class accuracy of the headline configuration",
    "scratch_vs_transfer": "From scratch vs transfer on the same data",
    "training_curves": "Training curves of the heads and from-scratch networks",
    "throughput": "Extraction throughput",
    "fewshot": "Few-shot curves: test accuracy against training images per class",
}


def fewshot_table(curves: list[FewShotSeries]) -> tuple[list[str], list[list[str]]]:
    """The few-shot curves as a table: a row per curve, a column per shot count; "mean ± std (settings)"."""
    shots = sorted({n for curve in curves for n in curve.points})
    def cell(curve: FewShotSeries, n: int) -> str:
        mean, std = curve.over_seeds(n)
        return f"{_pct(mean)} ± {_pct(std)}" + (f" ({curve.chosen(n)})" if curve.chosen(n) else "")

    cells = [[curve.label, *(cell(curve, n) if n in curve.points else "" for n in shots)] for curve in curves]
    return ["curve", *(f"{n}/class %" for n in shots)], cells


FEWSHOT_RULE = ("Few-shot curves: for each shot count, that many training images per class drawn per seed; each "
                "subset's settings chosen inside it (k-fold CV where every class has enough images, else "
                "leave-one-out, else with one image per class the fixed C=1 or k=1), the whole test split scored "
                "once. Cells: mean ± std of the test accuracy over the seeds, and the settings chosen; results.csv "
                "has every subset with its 95% interval.")


def _present(values) -> list:
    """The distinct values that are there (not None), sorted."""
    return sorted({value for value in values if value is not None})


def published_lines(rows: list[Row]) -> list[str]:
    """The reference points that apply to these rows, each with its source and conditions."""
    return [f"{p.name}: {100 * p.accuracy:.1f}% ({p.source}; {p.conditions})" for p in published_for(rows)]


def header_lines(rows: list[Row]) -> list[str]:
    """What a reader needs before the table: the data, the protocol, the software and the compute."""
    lines = []
    for fingerprint in dict.fromkeys(row.run.dataset_fingerprint for row in rows):
        run = next(row.run for row in rows if row.run.dataset_fingerprint == fingerprint)
        config = run.config or {}
        images = config.get("images") or {}
        counts = f", {images['train']:,} training / {images['test']:,} test images" if images else ""
        layout = f" ({config['layout']} layout)" if config.get("layout") else ""
        shared = config.get("test_duplicates")
        duplicates = (f"; {shared} test image(s) byte-identical to training images (`transfer data info {run.dataset}`)"
                      if shared else "")
        lines.append(f"Data: {run.dataset}{layout}, fingerprint {fingerprint}: {len(run.classes)} classes{counts}{duplicates}.")
    cvs = _present((r.run.config or {}).get("cv") for r in rows)
    fractions = _present(((r.run.config or {}).get("train") or {}).get("val_fraction") for r in rows)
    seeds = _present((r.run.config or {}).get("seed", ((r.run.config or {}).get("train") or {}).get("seed")) for r in rows)
    splits = _present(r.run.splits for r in rows)
    protocol = ["test split scored once per setting, never used to choose"]
    if cvs:
        protocol.insert(0, f"C chosen by {'/'.join(map(str, cvs))}-fold stratified CV on the training split")
    if fractions:
        protocol.insert(len(protocol) - 1, f"epochs and settings of trained networks chosen on a "
                                           f"{'/'.join(f'{100 * f:g}%' for f in fractions)} validation part of it")
    protocol.append(f"seeds {', '.join(map(str, seeds))}" if seeds else "")
    protocol.append(f"re-drawn splits: {', '.join(map(str, splits))}")
    lines.append("Protocol: " + "; ".join(p for p in protocol if p) + ".")
    versions = rows[-1].run.versions or {}
    lines.append("Software: " + ", ".join(f"{name} {value}" for name, value in versions.items()) + "."
                 if versions else "Software: not recorded.")
    precisions = sorted({r.run.precision for r in rows if r.run.precision})
    extraction: dict[tuple, float] = {}
    for row in rows:
        if row.extract_seconds:
            key = (row.run.backbone, row.run.weights, row.run.pooling, row.run.precision, row.run.method == "bow")
            extraction[key] = max(extraction.get(key, 0.0), row.extract_seconds)
    total = sum(extraction.values()) + sum(row.fit_seconds or 0.0 for row in rows)
    devices = sorted({d for row in rows for d in (row.run.timings or {}).get("extract_devices", [])})
    trained_on = sorted({row.run.timings["train_device"] for row in rows if (row.run.timings or {}).get("train_device")})
    runtimes = list(dict.fromkeys(r for row in rows for r in (row.run.timings or {}).get("extract_runtimes", [])))
    lines.append(f"Compute: {total:,.0f} s for the runs shown (extractions once each, every training stage)"
                 + (f"; precision {', '.join(precisions)}" if precisions else "")
                 + (f"; extracted on {', '.join(devices)}" if devices else "")
                 + (f"; forward pass: {'; '.join(runtimes)}" if runtimes else "")
                 + (f"; heads and networks trained on {', '.join(trained_on)}" if trained_on else "") + ".")
    return lines


def data_notes(rows: list[Row]) -> list[str]:
    """Facts about the data behind the rows that a reader must know: test images shared with training."""
    shared: dict[str, int] = {}
    for row in rows:
        count = (row.run.config or {}).get("test_duplicates", 0)
        if count:
            shared[row.run.dataset] = max(shared.get(row.run.dataset, 0), count)
    return [f"{count} test image(s) of {dataset} are byte-identical to training images, so the test accuracy is "
            f"slightly optimistic (`transfer data info {dataset}` lists them)." for dataset, count in shared.items()]


def _markdown_table(headers: list[str], cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells)]


def _markdown(rows: list[Row], curves: list[FewShotSeries], figures: dict[str, Path], published: bool) -> str:
    every = rows + [row for curve in curves for seeds in curve.points.values() for row in seeds]
    lines = ["# transfer report", "", *[f"- {line}" for line in header_lines(every)], "",
             f"{len(rows)} configuration(s). {HEADLINE_RULE}", ""]
    notes = data_notes(every)
    lines += [f"Note: {text}" for text in notes] + ([""] if notes else [])
    lines += _markdown_table(HEADERS, [table_cells(row) for row in rows])
    if curves:
        lines += ["", "## Few-shot curves", "", FEWSHOT_RULE, "", *_markdown_table(*fewshot_table(curves))]
    references = published_lines(rows) if published else []
    if references:
        lines += ["", "Published reference points (not measured here):", *[f"- {line}" for line in references]]
    withheld = published_withheld(rows) if published else None
    if withheld:
        lines += ["", f"Note: {withheld}."]
    for name, path in figures.items():  # each figure carries its own title
        lines += ["", f"![{CAPTIONS[name]}]({path.name})"]
    missing = [CAPTIONS[n] for n in FIGURES if n not in figures]
    if missing:
        lines += ["", "Not drawn (no such runs in the store yet): " + "; ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    """Text for HTML: escaped, with `commands` as code (as Markdown shows them)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html(rows: list[Row], curves: list[FewShotSeries], figures: dict[str, Path], published: bool) -> str:
    def cell(text: str, tag: str = "td", header: str = "") -> str:
        figure = header in NUMERIC_HEADERS  # figures never break inside; names may, anywhere
        return f"<{tag}{' class=n' if figure else ''}>{_inline(text)}</{tag}>"

    every = rows + [row for curve in curves for seeds in curve.points.values() for row in seeds]
    fewshot = ""
    if curves:
        headers, cells = fewshot_table(curves)
        fewshot = (f"<h2>Few-shot curves</h2><p>{_inline(FEWSHOT_RULE)}</p><table><tr>"
                   + "".join(cell(h, "th") for h in headers) + "</tr>\n"
                   + "\n".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in cells) + "</table>")

    header = "<tr>" + "".join(cell(h, "th") for h in HEADERS) + "</tr>"
    body = "\n".join(
        f"<tr class='{'best' if row.best else ''}'>" + "".join(cell(c, header=h) for c, h in zip(table_cells(row), HEADERS)) + "</tr>" for row in rows
    )
    images = "\n".join(
        f"<figure><img alt='{html.escape(CAPTIONS[name])}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'></figure>"  # the figure's own title names it
        for name, path in figures.items()
    )
    references = ""
    if published and published_lines(rows):
        items = "".join(f"<li>{html.escape(line)}</li>" for line in published_lines(rows))
        references = f"<p class='published'>Published reference points (not measured here):</p><ul>{items}</ul>"
    withheld = published_withheld(rows) if published else None
    if withheld:
        references = f"<p class='note'>Note: {_inline(withheld)}.</p>"
    header_items = "".join(f"<li>{_inline(line)}</li>" for line in header_lines(every))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>transfer report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 3px 5px; text-align: left; vertical-align: top; }}
td {{ overflow-wrap: anywhere; }}
td.n {{ white-space: nowrap; text-align: right; }}
td:first-child {{ min-width: 16em; }}
code {{ background: #f4f4f4; padding: 0 2px; }}
th {{ background: #f0f0f0; }}
tr.best {{ background: #fff6d5; font-weight: bold; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
.published {{ color: #666; }}
</style></head><body>
<h1>transfer report</h1>
<ul>{header_items}</ul>
<p>{len(rows)} configuration(s). {_inline(HEADLINE_RULE)}</p>
{"".join(f"<p class='note'>Note: {_inline(text)}</p>" for text in data_notes(every))}
<table>{header}
{body}</table>
{fewshot}
{references}
{images}
</body></html>
"""
