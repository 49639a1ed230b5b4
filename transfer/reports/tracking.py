"""Stored runs sent to MLflow (the `mlflow` extra): each run once, as an MLflow run whose parameters are its
configuration, whose metrics are its scores and times and whose artifact is its model file; a study's report
(figures, Markdown, HTML, CSV) as one more run. Runs already there (by their content key) are not sent again."""

from __future__ import annotations

import os
import time
from pathlib import Path

from transfer.core.errors import UserError
from transfer.reports.runs_table import run_row
from transfer.runs.store import RunRecord

METRICS = ("cv_accuracy", "test_accuracy", "test_std", "test_ci_low", "test_ci_high", "class_mean_accuracy",
           "extract_seconds", "fit_seconds")
KEY_TAG = "transfer.run_key"  # the run's content key: a run already sent is found by it
LONG_CONFIG = ("test_correct", "split_accuracies", "candidates_cv", "settings")  # per image or per setting: not parameters
PARAM_CHARS = 500  # MLflow's most conservative limit on a parameter's value


def tracking_uri(where: str) -> str:
    """An MLflow tracking URI as given ("http://…", "sqlite:///…", "file:…"), or a folder for a local file store.
    The file store is what a laptop has without a server; MLflow keeps it in maintenance mode and refuses
    it unless told, so it is told, for that store only."""
    if "://" in where or where.startswith("file:"):
        uri = where
    else:
        uri = Path(where).resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def _client(where: str, experiment: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("--mlflow needs MLflow: pip install -e '.[mlflow]' (or pip install mlflow-skinny)") from None
    client = MlflowClient(tracking_uri(where))
    found = client.get_experiment_by_name(experiment)
    return client, found.experiment_id if found is not None else client.create_experiment(experiment)


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested configuration as MLflow parameters: "train.lr" → "0.01"."""
    flat: dict[str, str] = {}
    for name, value in config.items():
        if name in LONG_CONFIG:
            continue
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = str(value)[:PARAM_CHARS]
    return flat


def _sent(client, experiment_id: str, tag: str, value: str) -> str | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0].info.run_id if runs else None


def log_runs(runs: list[RunRecord], where: str, experiment: str) -> list[tuple[str, bool]]:
    """Each run as an MLflow run of ``experiment`` at ``where``: (its MLflow run id, whether sent now), in order."""
    client, experiment_id = _client(where, experiment)
    from mlflow.entities import Metric, Param

    logged = []
    for run in runs:
        key = str((run.config or {}).get("key") or f"store-{run.dataset_fingerprint}-{run.id}")
        existing = _sent(client, experiment_id, KEY_TAG, key)
        if existing is not None:
            logged.append((existing, False))
            continue
        row = run_row(run)
        metrics = {name: float(row[name]) for name in METRICS if row[name] is not None}
        params = {**_flat(run.config or {}), **{name: str(value)[:PARAM_CHARS] for name, value in row.items()
                                                  if name not in METRICS and value is not None}}
        made = client.create_run(experiment_id, run_name=row["configuration"][:250],
                                 tags={KEY_TAG: key, "transfer.store_id": str(run.id)})
        now = int(time.time() * 1000)
        client.log_batch(made.info.run_id, params=[Param(name, text) for name, text in params.items()],
                         metrics=[Metric(name, figure, now, 0) for name, figure in metrics.items()])
        if run.model_path and Path(run.model_path).exists():
            client.log_artifact(made.info.run_id, run.model_path, "model")
        client.set_terminated(made.info.run_id)
        logged.append((made.info.run_id, True))
    return logged


def log_report(directory: Path, key: str, where: str, experiment: str) -> tuple[str, bool]:
    """A report folder's files as one MLflow run (tagged with the report's ``key``: sent once per content)."""
    client, experiment_id = _client(where, experiment)
    existing = _sent(client, experiment_id, KEY_TAG, key)
    if existing is not None:
        return existing, False
    made = client.create_run(experiment_id, run_name=f"report {directory.name}", tags={KEY_TAG: key})
    for path in sorted(directory.iterdir()):
        if path.is_file():
            client.log_artifact(made.info.run_id, str(path), "report")
    client.set_terminated(made.info.run_id)
    return made.info.run_id, True


def summary(logged: list[tuple[str, bool]], where: str, experiment: str) -> str:
    new = sum(1 for _, now in logged if now)
    return (f"MLflow ({tracking_uri(where)}, experiment {experiment!r}): {new} run(s) sent, "
            f"{len(logged) - new} already there")

