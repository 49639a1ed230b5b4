"""Every stored run as one flat row of plain values: what `transfer results --format csv|jsonl|parquet` writes
and `transfer.results()` returns as a data frame (a column per field, the same names in every format)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from transfer.core.choices import Method, Probe, TableFormat
from transfer.core.errors import UserError
from transfer.core.files import atomic_path, atomic_write_text
from transfer.reports.report import Row
from transfer.runs.labels import run_label
from transfer.runs.store import RunRecord

COLUMNS = ("id", "created", "method", "probe", "configuration", "dataset", "dataset_fingerprint", "backbone", "weights",
           "pooling", "layer", "precision", "chosen", "cv_accuracy", "test_accuracy", "test_std", "test_ci_low",
           "test_ci_high", "class_mean_accuracy", "test_images", "splits", "train_per_class", "shots", "subset_seed",
           "extract_seconds", "fit_seconds", "model_path")


def run_row(run: RunRecord) -> dict[str, Any]:
    """One run's `COLUMNS`: accuracies as fractions, its 95% Wilson interval on its own test split, the
    model file it saved (None for methods that save none)."""
    row = Row(run, run_label(run).title)
    config = run.config or {}
    interval = row.test_interval
    per_class = row.train_per_class
    return {
        "id": run.id, "created": run.created, "method": str(run.method),
        "probe": config.get("probe", Probe.SVM if run.method == Method.SVM else None),
        "configuration": row.label, "dataset": run.dataset, "dataset_fingerprint": run.dataset_fingerprint,
        "backbone": run.backbone, "weights": run.weights, "pooling": run.pooling, "layer": run.layer,
        "precision": run.precision, "chosen": run.chosen_text or None, "cv_accuracy": run.cv_best,
        "test_accuracy": run.test_accuracy, "test_std": run.test_std,
        "test_ci_low": interval[0] if interval else None, "test_ci_high": interval[1] if interval else None,
        "class_mean_accuracy": row.class_mean_accuracy, "test_images": row.test_images, "splits": run.splits,
        "train_per_class": per_class[0] if per_class and per_class[0] == per_class[1] else None,
        "shots": config.get("shots"), "subset_seed": config.get("subset_seed"),
        "extract_seconds": row.extract_seconds, "fit_seconds": row.fit_seconds, "model_path": run.model_path,
    }


def write_runs(runs: list[RunRecord], form: TableFormat, out: Path | None) -> None:
    """The runs' rows as CSV or JSON lines (to ``out``, else standard output), or as a Parquet file (``out``)."""
    rows = [run_row(run) for run in runs]
    if form == TableFormat.PARQUET:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if out is None:
            raise UserError("--format parquet writes a binary file: give it with --out FILE.parquet")
        with atomic_path(out) as partial:
            pq.write_table(pa.Table.from_pylist(rows), partial)
        return
    if form == TableFormat.JSONL:
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
