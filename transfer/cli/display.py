"""Terminal tables for the commands' results (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from transfer.classifiers.metrics import class_mean_accuracy, unequal_classes
from transfer.core.choices import Method, Probe, StageStatus
from transfer.core.console import console, err_console, note, styled
from transfer.data.datasets import SPLITS, UNSPLIT, DatasetSummary, ImageDataset
from transfer.features.backbones import BackboneSpec, LayerInfo, shown_pooling
from transfer.features.cache import CacheEntry
from transfer.features.extract import ExtractionOutcome
from transfer.reports.report import (
    FEWSHOT_RULE,
    HEADERS,
    HEADLINE_RULE,
    NUMERIC_HEADERS,
    FewShotSeries,
    ReportFiles,
    Row,
    data_notes,
    fewshot_table,
    header_lines,
    published_for,
    published_lines,
    published_withheld,
    reference_cells,
    table_cells,
    training_score_cells,
)
from transfer.runs.store import RunRecord

if TYPE_CHECKING:  # these pull in scikit-learn; only their types are needed here
    from rich.console import JustifyMethod

    from transfer.classifiers.scratch import LayerSummary
    from transfer.classifiers.settings import FewShotConfig
    from transfer.cli.inspect import Inspection
    from transfer.runs.fewshot import FewShotCurve
    from transfer.runs.jobs import GridOutcome, HeadOutcome, ScratchOutcome
    from transfer.runs.predict import Prediction
    from transfer.study.plan import Stage, StageReport, State


MAX_CELL = 36  # a longer cell folds onto several lines rather than widening its column


def fitted_table(title: str, columns: list[tuple[str, int]], rows: list[list], wide: bool = False,
                 right: tuple[str, ...] = (), styles: list[str | None] | None = None,
                 max_cell: int = MAX_CELL, short: dict[str, str] | None = None) -> tuple[Table, list[str]]:
    """A table that fits the terminal: ``columns`` are (header, rank), and while the table is wider than
    the terminal the column of highest rank is left out (rank 0: always shown); long cells fold at
    ``max_cell`` characters instead of being cut. ``short`` names headers more briefly unless ``wide``,
    which also shows every column. Returns the table and the headers left out."""
    if not wide and short:
        columns = [(short.get(header, header), rank) for header, rank in columns]
        right = tuple(short.get(header, header) for header in right)

    def width(index: int) -> int:
        lines = [len(line) for row in rows for line in str(row[index]).splitlines()] or [0]
        return min(max(len(columns[index][0]), *lines), max_cell) + 3

    shown = list(range(len(columns)))
    if not wide:
        while sum(map(width, shown)) + 1 > console.width and any(columns[i][1] for i in shown):
            shown.remove(max(shown, key=lambda i: (columns[i][1], i)))
    table = Table(title=title, title_justify="left")
    for i in shown:
        table.add_column(columns[i][0], justify="right" if columns[i][0] in right else "left", overflow="fold",
                         max_width=None if wide else max_cell)
    for number, row in enumerate(rows):
        table.add_row(*(row[i] for i in shown), style=styles[number] if styles else None)
    return table, [columns[i][0] for i in range(len(columns)) if i not in shown]


def print_fitted(table: Table, left_out: list[str]) -> None:
    console.print(table)
    if left_out:
        console.print(f"(left out to fit {console.width} columns: {', '.join(left_out)}; --wide shows them)")


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def print_extraction(outcome: ExtractionOutcome, layout: str) -> None:
    console.print(f"cache file: {outcome.path}", soft_wrap=True)  # whole, to copy (a table title would fold it)
    table = Table()
    table.add_column("split")
    table.add_column("layer")
    table.add_column("features", justify="right")
    for split, layers in outcome.shapes.items():
        if layout == UNSPLIT and split != "train":
            continue  # not split: every image is listed under train
        for layer, (rows, dims) in layers.items():
            table.add_row("all images" if layout == UNSPLIT else split, layer, f"{rows}×{dims}")
    console.print(table)
    if outcome.cached:
        console.print("cached: nothing to compute (delete with `transfer cache rm`)")
    else:
        where = ("on Ray actors" if outcome.engine == "ray" else
                 f"data loader wait {outcome.loader_wait_seconds:.1f} s "
                 f"({100 * outcome.loader_wait_seconds / max(outcome.seconds, 1e-9):.0f}%)")
        console.print(f"extracted {outcome.images} images in {outcome.seconds:.1f} s: {outcome.images_per_s:.1f} images/s, "
                      f"{where}, peak RSS {outcome.peak_rss_mb:,.0f} MB")
    if outcome.skipped:
        console.print(styled((f"{len(outcome.skipped)} unreadable image(s) skipped", "yellow"), " (recorded in the cache by content: skipped until the file changes):"))
        for relpath in outcome.skipped:
            console.print(f"  {relpath}")


def print_layers(spec: BackboneSpec, infos: list[LayerInfo], total: int) -> None:
    table = Table(title=f"{spec.name} layers", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("layer", "left"), ("node", "left"), ("output", "right"), ("dims", "right"), ("parameters", "right"),
        ("receptive field", "right"), ("stride", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for info in infos:
        dims = 1
        for d in info.shape:
            dims *= d
        field = "whole image" if info.receptive_field is None else f"{info.receptive_field}×{info.receptive_field}"
        table.add_row(info.name, info.node, "×".join(map(str, info.shape)), f"{dims:,}", f"{info.parameters:,}",
                      field, "" if info.stride is None else str(info.stride))
    console.print(table)
    console.print(f"total parameters: {total:,}; receptive field and stride in input pixels; a transformer's tokens "
                  f"(tokens×width) become one vector by --tokens")
    prep = spec.pretrained.preprocessing
    console.print(f"default layer: {spec.taps.default}; pretrained weights: {spec.pretrained.name or spec.name}")
    console.print(f"preprocessing (part of the cache key): resize the shorter side to {prep.resize} ({prep.interpolation}), "
                  f"centre crop {prep.crop}, mean {prep.mean}, std {prep.std}")


def print_data_info(dataset: ImageDataset, summary: DatasetSummary) -> None:
    table = Table(title=f"{dataset.root} ({dataset.layout})", title_justify="left")
    table.add_column("class")
    columns = {"images": "train"} if dataset.layout == UNSPLIT else {split: split for split in SPLITS}
    for column in columns:
        table.add_column(column, justify="right")
    for name in dataset.classes:
        table.add_row(name, *(str(summary.counts[split][name]) for split in columns.values()))
    table.add_row("total", *(str(sum(summary.counts[split].values())) for split in columns.values()), style="bold")
    console.print(table)
    train = summary.counts["train"]
    smallest = min(dataset.classes, key=lambda name: train[name])
    if dataset.layout == UNSPLIT:
        console.print(f"smallest class: {smallest!r}, {train[smallest]} images: --train-per-class can be 1 to "
                      f"{train[smallest] - 1} (the rest of each class is its test split)")
    else:
        console.print(f"smallest class in train: {smallest!r}, {train[smallest]} images")
    sizes = ", ".join(f"{w}×{h}: {n}" for (w, h), n in summary.sizes.most_common(5))
    more = f" (+{len(summary.sizes) - 5} other sizes)" if len(summary.sizes) > 5 else ""
    console.print(f"sizes: {sizes}{more}")
    console.print("modes: " + ", ".join(f"{mode}: {n}" for mode, n in summary.modes.most_common()))
    if summary.unreadable:
        console.print(styled((f"{len(summary.unreadable)} unreadable image(s):", "yellow"), " " + ", ".join(summary.unreadable)))
    groups = summary.duplicates
    across = [g for g in groups if len({split for split, _ in g}) > 1]
    console.print(f"byte-identical duplicates: {len(groups)} group(s), {len(across)} across train and test")
    for group in groups:
        mark = ("  across splits" if group in across else "", "red")
        console.print(styled("  " + "  =  ".join(relpath for _, relpath in group), mark))


def print_cache(root: Path, entries: list[CacheEntry], artifacts: list[Path]) -> None:
    """Each extraction file, then a line per kind of other cached file (`transfer cache rm` reaches them all)."""
    if not entries:
        console.print(f"no cached features in {root}")
    for entry in entries:
        console.print(styled((entry.path.name, "bold"), f"  {_mib(entry.size_bytes)}"))
        if entry.earlier_format is not None:
            console.print(f"  made by an earlier version of transfer (cache format {entry.earlier_format}): never read "
                          f"again; `transfer cache rm {entry.path.name}` removes it")
            continue
        if entry.key is None:
            console.print(styled("  ", ("unreadable", "red"), " (damaged, or being written; the next extraction redoes a damaged file)"))
            continue
        key = entry.key
        crop = key["preprocessing"]["crop"]
        pooling = shown_pooling(key["backbone"], key["pooling"])
        pooling = f"pooling {pooling}, " if pooling else ""
        console.print(f"  {key['backbone']}, weights {key['weights']}, {pooling}{key['precision']}, "
                      f"{crop}×{crop} crops{', colour' if key['preprocessing']['color'] else ''}")
        for name, shape in entry.layers.items():
            console.print(f"  {name}: {shape}")
        if entry.unreadable:
            console.print(f"  {entry.unreadable} unreadable image(s) skipped (`transfer extract` names them)")
    if entries:
        console.print(f"{len(entries)} file(s), {_mib(sum(e.size_bytes for e in entries))} in {root}")
    kinds: dict[str, list[Path]] = {}
    for path in artifacts:
        kind = "damaged, moved aside" if ".damaged-" in path.name else path.parent.name if path.parent != root else None
        if kind:
            kinds.setdefault(kind, []).append(path)
    for kind, paths in kinds.items():
        pattern = "damaged" if kind.startswith("damaged") else f"{kind}/"
        console.print(f"{kind}: {len(paths)} file(s), {_mib(sum(p.stat().st_size for p in paths))} "
                      f"(remove with `transfer cache rm {pattern}`)")


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _mean_std(figures: tuple[float, float]) -> str:
    return f"{_pct(figures[0])} ± {_pct(figures[1])}"


def _class_mean(per_class: list[float], confusion: list[list[int]]) -> tuple:
    """", mean of per-class accuracies X%" where the test classes differ in size (so the two figures differ)."""
    if not unequal_classes(confusion):
        return ()
    sizes = [sum(row) for row in confusion if sum(row)]
    return (", mean of the per-class accuracies ", (f"{_pct(class_mean_accuracy(per_class, confusion))}%", "bold"),
            f" (test classes of {min(sizes)} to {max(sizes)} images)")


def print_grid(outcome: GridOutcome) -> None:
    from transfer.classifiers.probes import setting_text

    result = outcome.result
    searched = "C" if outcome.probe in (Probe.SVM, Probe.LOGREG) else "k and T" if outcome.probe == Probe.KNN else ""
    how = f", {searched} chosen by cross-validation on the training split" if searched else ", no setting to choose"
    table = Table(title=f"{outcome.name}: {outcome.probe.shown}{how}", title_justify="left")
    for column in ("setting", "CV accuracy %", "test accuracy %", ""):
        table.add_column(column, justify="right")
    for setting, mean, std, test in zip(result.grid, result.cv_mean, result.cv_std, result.test_per_setting):
        chosen = setting == result.chosen
        table.add_row(setting_text(setting), f"{100 * mean:.2f} ± {100 * std:.2f}", _pct(test),
                      "← chosen by CV" if chosen and searched else "", style="bold" if chosen else None)
    console.print(table)
    if outcome.candidates_cv:
        console.print(f"normalisation chosen by CV: {outcome.chosen_candidate} (best CV accuracy "
                      + ", ".join(f"{name} {_pct(cv)}%" for name, cv in outcome.candidates_cv.items()) + "); its grid above")
    at = f"the CV-chosen {setting_text(result.chosen)}" if searched else "its only setting"
    console.print(styled(f"test accuracy at {at}: ", (f"{_pct(result.test_accuracy)}%", "bold"),
                         *_class_mean(result.per_class_accuracy, result.confusion), f"  (fit {result.fit_seconds:.1f} s)"))
    if outcome.split_accuracies:
        over_splits, spread = outcome.mean_std
        console.print(styled(f"over {len(outcome.split_accuracies)} re-drawn splits: ", (f"{_pct(over_splits)} ± {_pct(spread)}%", "bold"),
                             f" ({', '.join(_pct(a) for a in outcome.split_accuracies)})"))
    console.print(f"model: {outcome.model_path}   results store run #{outcome.run_id}")


def print_fewshot(curves: list[FewShotCurve], config: FewShotConfig) -> None:
    """Per layer, the test accuracy (mean ± std over the seeds) at each shot count for each probe, with the
    settings the subsets' CV chose; then each probe's search time."""
    from transfer.classifiers.metrics import over_seeds, tally

    for layer in dict.fromkeys(curve.layer for curve in curves):
        these = [curve for curve in curves if curve.layer == layer]
        table = Table(title=f"{layer}: test accuracy %, mean ± std over {config.seeds} subsets per shot count; "
                            "settings chosen by CV inside each subset", title_justify="left")
        table.add_column("shots/class", justify="right")
        table.add_column("CV", justify="left")
        for curve in these:
            table.add_column(curve.probe.shown, justify="right")
        for shots in config.shots:
            cells = [curve.at(shots) for curve in these]
            table.add_row(str(shots), str(cells[0][0].folds), *(
                _mean_std(over_seeds([cell.accuracy for cell in at])) + "\n" + tally([cell.chosen for cell in at])
                for at in cells))
        console.print(table)
        console.print("search seconds: " + ", ".join(f"{curve.probe} {curve.seconds:.1f} s" for curve in these)
                      + (" (subsets already in the store not counted)" if any(c.cached for curve in these for c in curve.cells) else ""))
    ids = [cell.run_id for curve in curves for cell in curve.cells]
    console.print(f"results store runs #{min(ids)}–#{max(ids)}; `transfer report` draws the curves")


RESULT_COLUMNS = [("#", 0), ("date", 5), ("method", 1), ("backbone", 2), ("weights", 4), ("pooling", 4), ("layer", 3),
                  ("chosen", 3), ("CV %", 1), ("val %", 2), ("test %", 0), ("splits", 3), ("class mean %", 1), ("data", 2),
                  ("model file", 4)]


def _method_text(run: RunRecord) -> str:
    """The method column: the probe where there is one ("knn"), a few-shot subset's with it ("fewshot knn")."""
    probe = (run.config or {}).get("probe")
    if probe is None:
        return str(run.method)
    return f"{run.method} {probe}" if run.method == Method.FEWSHOT else str(probe)


def print_results(runs: list[RunRecord], wide: bool = False, models: bool = False) -> None:
    if not runs:
        console.print("no runs match")
        return
    rows = []
    for run in runs:
        test = _pct(run.test_accuracy) + (f" ± {_pct(run.test_std)}" if run.test_std is not None else "")
        rows.append([str(run.id), run.created or "", _method_text(run), run.backbone or "", run.weights or "", shown_pooling(run.backbone, run.pooling),
                     run.layer or "", run.chosen_text, *training_score_cells(run), test, str(run.splits),
                     _pct(class_mean_accuracy(run.per_class_accuracy, run.confusion)),
                     Path(run.dataset).name or run.dataset,  # the folder's name: `--wide` does not lengthen it
                     Path(run.model_path).name if run.model_path else ""])
    print_fitted(*fitted_table("results", RESULT_COLUMNS, rows, wide, right=("#", "CV %", "val %", "test %", "splits", "class mean %"),
                               short=REPORT_SHORT))
    if models:  # whole paths, one a line, to copy into `transfer predict` (a table cell would fold them)
        console.print("model files (`transfer predict MODEL IMAGE...`):")
        for run in runs:
            missing = " (missing: re-run to re-create it)" if run.model_path and not Path(run.model_path).exists() else ""
            console.print(f"  #{run.id}  {run.model_path or '(none: this method saves no model)'}{missing}", soft_wrap=True)
    else:
        console.print("(--models lists each run's model file)")


# Which report columns a narrow terminal leaves out first (highest rank first).
REPORT_RANKS = {"configuration": 0, "data": 2, "test %": 0, "test 95% CI": 1, "CV %": 1, "val %": 3, "class mean %": 2, "vs ★ p": 1,
                "chosen": 3, "splits": 4, "fit s": 4, "extract s": 5, "classifier": 5, "method": 6, "backbone": 6,
                "layer": 6, "pooling": 7, "weights": 7}


REPORT_SHORT = {"test 95% CI": "95% CI", "class mean %": "class %"}


def print_report(rows: list[Row], subsets: list[Row], curves: list[FewShotSeries], files: ReportFiles, published: bool,
                 wide: bool = False) -> None:
    """The report's tables: the configurations on whole training splits, then the few-shot curves (of the
    ``subsets``' rows)."""
    references = published_for(rows) if published else ()
    cells = [table_cells(row) for row in rows] + [reference_cells(r.name, r.accuracy) for r in references]
    styles = ["bold" if row.best else None for row in rows] + ["dim italic"] * len(references)
    right = tuple(h for h in NUMERIC_HEADERS if h != "chosen")
    for line in header_lines(rows + subsets):
        console.print(line, soft_wrap=True)
    if rows:
        # Configuration names fold onto several lines, so that the figures beside them fit 80 columns.
        print_fitted(*fitted_table("accuracy per configuration (★ headline: chosen on training data, see below)",
                                   [(h, REPORT_RANKS[h]) for h in HEADERS], cells, wide, right, styles, max_cell=19,
                                   short=REPORT_SHORT))
        console.print(HEADLINE_RULE, soft_wrap=True)
    if curves:
        headers, fewshot = fewshot_table(curves)
        print_fitted(*fitted_table("few-shot curves: test accuracy %, mean ± std over seeds (settings chosen)",
                                   [(h, 0) for h in headers], fewshot, wide, tuple(headers[1:]), max_cell=24))
        console.print(FEWSHOT_RULE, soft_wrap=True)
    if published:
        for line in published_lines(rows):
            console.print(f"published, not measured here: {line}", soft_wrap=True)
        note(published_withheld(rows))
    for text in data_notes(rows):
        note(text)
    console.print(f"report: {files.markdown}, {files.html}, {files.csv}")
    console.print("figures: " + ", ".join(str(p) for p in files.figures.values()))


def print_predictions(predictions: list[Prediction], output: str) -> None:
    import csv
    import json
    import sys

    failed = [p for p in predictions if p.error]
    if output == "json":
        print(json.dumps([{"image": p.path, "classes": p.classes, "scores": p.scores, "error": p.error} for p in predictions], indent=2))
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "score", "error"])
        for p in predictions:
            for rank, (name, score) in enumerate(zip(p.classes, p.scores), start=1):
                writer.writerow([p.path, rank, name, f"{score:.4f}", ""])
            if p.error:
                writer.writerow([p.path, "", "", "", p.error])
    else:
        print_ranked(predictions, "", "score")
    if failed:
        err_console.print(styled((f"{len(failed)} of {len(predictions)} image(s) could not be read", "yellow")))


def print_ranked(predictions: Sequence[Prediction], title: str, score_name: str) -> None:
    """One row per image: its classes best first with their scores, or why it could not be read. Images
    are named relative to the folder they share (printed once, above), and long cells fold: nothing is cut."""
    import os

    paths = [os.path.abspath(p.path) for p in predictions]
    common = os.path.commonpath([os.path.dirname(path) for path in paths]) if len(paths) > 1 else os.sep
    if common != os.sep:
        console.print(f"images in {common}{os.sep}", soft_wrap=True)
    table = Table(title=title or None, title_justify="left")
    for column in ("image", "class", score_name):
        table.add_column(column, justify="right" if column == score_name else "left", overflow="fold")
    for p, path in zip(predictions, paths):
        name = os.path.relpath(path, common) if common != os.sep else p.path
        if p.error:
            table.add_row(name, styled((p.error, "red")), "")
        else:
            table.add_row(name, "\n".join(p.classes), "\n".join(f"{s:.3f}" for s in p.scores))
    console.print(table)


def print_inspections(found: list[Inspection], output: str, random_weights: bool) -> None:
    import json

    if output == "json":
        print(json.dumps([{"image": f.path, "classes": f.classes, "probabilities": f.scores,
                           "maps": str(f.maps_png) if f.maps_png else None, "error": f.error} for f in found], indent=2))
        return
    title = "the network's own ImageNet predictions" + (" (random weights: meaningless)" if random_weights else "")
    print_ranked(found, title, "probability")
    drawn = [str(f.maps_png) for f in found if f.maps_png]
    if drawn:
        console.print("feature maps:")
        for path in drawn:
            console.print(f"  {path}", soft_wrap=True)


def print_head(outcome: HeadOutcome) -> None:
    result = outcome.result
    for tried in outcome.candidates:
        console.print(f"tried {tried['optimizer']} lr {tried['lr']:g}: best validation accuracy {_pct(tried['val_accuracy'])}%")
    curves = result.curves
    table = Table(title=f"{outcome.spec.name} on {outcome.layer}: epochs (validation = part of the training split)", title_justify="left")
    for column in ("epoch", "train loss", "train %", "val loss", "val %", "s"):
        table.add_column(column, justify="right")
    for i, values in enumerate(zip(curves["train_loss"], curves["train_acc"], curves["val_loss"], curves["val_acc"], curves["epoch_seconds"])):
        best = i + 1 == result.best_epoch
        table.add_row(str(i + 1) + (" ←best" if best else ""), f"{values[0]:.3f}", _pct(values[1]), f"{values[2]:.3f}",
                      _pct(values[3]), f"{values[4]:.2f}", style="bold" if best else None)
    console.print(table)
    if result.resumed_at and not outcome.candidates:  # a chosen candidate always reloads its own checkpoint
        console.print(f"resumed from the checkpoint after epoch {result.resumed_at}")
    if result.stopped_early:
        console.print(f"stopped early: no better validation accuracy for {len(curves['val_acc']) - result.best_epoch} epochs")
    console.print(styled(f"test accuracy of the best-validation epoch ({result.best_epoch}): ",
                         (f"{_pct(result.test_accuracy)}%", "bold"), *_class_mean(result.per_class_accuracy, result.confusion),
                         f"  ({result.epoch_seconds:.3f} s per epoch)"))
    console.print(f"model: {outcome.model_path}   results store run #{outcome.run_id}")


_STATUS_STYLE = {StageStatus.CACHED: "green", StageStatus.RAN: "bold green", StageStatus.FAILED: "bold red",
                 StageStatus.BLOCKED: "yellow", StageStatus.INTERRUPTED: "yellow"}


def print_plan(plan: list[tuple[Stage, State]]) -> None:
    table = Table(title="plan (dry run: nothing is computed)", title_justify="left")
    for column in ("#", "stage", "needs", "state", "detail"):
        table.add_column(column, justify="right" if column == "#" else "left")
    for index, (stage, state) in enumerate(plan, start=1):
        table.add_row(str(index), stage.name, ", ".join(stage.needs), styled(("cached", "green")) if state.done else "will run",
                      state.detail)
    console.print(table)
    todo = sum(not state.done for _, state in plan)
    console.print(f"{todo} of {len(plan)} stage(s) would run; the others are up to date.")


def print_stage_end(report: StageReport) -> None:
    style = _STATUS_STYLE[report.status]
    console.print(styled("  ", (report.status, style), f" {report.stage.name}"
                         + (f" in {report.seconds:.1f} s" if report.status == StageStatus.RAN else "") + f": {report.detail}"),
                  soft_wrap=True)


def print_run_summary(reports: list[StageReport], seconds: float, wide: bool = False) -> None:
    rows = [[report.stage.name, styled((report.status, _STATUS_STYLE[report.status])), f"{report.seconds:.1f}", report.detail]
            for report in reports]
    print_fitted(*fitted_table("summary", [("stage", 0), ("status", 0), ("seconds", 1), ("result", 0)], rows, wide,
                               right=("seconds",)))
    counts = {status: sum(r.status == status for r in reports) for status in _STATUS_STYLE}
    console.print(f"{len(reports)} stage(s) in {seconds:.1f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))


def print_network_summary(arch: str, classes: int, size: int, rows: list[LayerSummary]) -> None:
    table = Table(title=f"{arch}: {size}×{size} input, {classes} classes", title_justify="left")
    for column in ("layer", "type", "output", "parameters", "multiply-accumulates"):
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in rows:
        table.add_row(row.name, row.kind, "×".join(map(str, row.output)), f"{row.parameters:,}", f"{row.macs:,}")
    table.add_section()
    table.add_row("total", "", "", f"{sum(r.parameters for r in rows):,}", f"{sum(r.macs for r in rows):,}", style="bold")
    console.print(table)


def print_scratch(outcomes: list[ScratchOutcome], series: str) -> None:
    title = {"ladder": "improvement ladder", "grid": "grid search", "single": "from scratch"}[series]
    table = Table(title=f"{title}: best epoch chosen on the validation part of the training split", title_justify="left")
    for column in ("step", "parameters", "epochs", "best epoch", "val %", "val top-5 %", "test %", "s/epoch", "run"):
        table.add_column(column, justify="left" if column == "step" else "right")
    chosen = max(outcomes, key=lambda o: o.trained.result.best_val_accuracy) if series == "grid" else None
    for outcome in outcomes:
        result = outcome.trained.result
        best = result.best_epoch - 1
        top5 = result.curves["val_top5"][best]
        table.add_row(outcome.step or outcome.trained.config.arch, f"{outcome.trained.parameters:,}",
                      str(len(result.curves["val_acc"])), str(result.best_epoch), _pct(result.best_val_accuracy),
                      _pct(top5), _pct(result.test_accuracy), f"{result.epoch_seconds:.2f}", f"#{outcome.run_id}",
                      style="bold" if outcome is chosen else None)
    console.print(table)
    if chosen is not None:
        console.print(styled("chosen by validation accuracy: ", (chosen.step, "bold"),
                             f" → test {_pct(chosen.trained.result.test_accuracy)}%"
                             " (every setting's test accuracy is shown as a curve, not used to choose)"))
