"""`--mlflow`: a study's runs and its report sent to a real local MLflow store, read back, never twice."""

from pathlib import Path

from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.reports.tracking import KEY_TAG, tracking_uri
from transfer.runs.store import ResultsStore

STUDY = """\
[study]
name = "tracked"

[data]
path = "{data}"

[[features]]
backbone = "efficientnet_lite0"
weights = "random"
layers = ["avgpool"]
image_size = 32
precision = "fp32"

[svm]
c_grid = [0.1, 1]
cv = 2
probes = ["svm", "ncm"]

[report]
name = "tracked"
"""


def test_a_studys_runs_and_report_reach_mlflow_once(tmp_path, small_data, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(data=small_data))
    command = ["run", str(study), "--cache-dir", str(cache_dir), "--mlflow", "mlruns"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "2 run(s) sent, 0 already there" in first.output and "1 run(s) sent" in first.output
    client = MlflowClient(tracking_uri("mlruns"))
    experiment = client.get_experiment_by_name("tracked")
    sent = {run.data.tags[KEY_TAG]: run for run in client.search_runs([experiment.experiment_id])}
    stored = ResultsStore(cache_dir / "results.sqlite").runs()
    assert len(sent) == 3 and (tmp_path / "mlruns").is_dir()
    for run in stored:
        tracked = sent[run.config["key"]]
        assert tracked.data.metrics["test_accuracy"] == run.test_accuracy
        assert tracked.data.params["probe"] == run.config.get("probe", "svm")
        (model,) = client.list_artifacts(tracked.info.run_id, "model")
        assert Path(model.path).name == Path(run.model_path).name
    report = next(run for run in sent.values() if run.info.run_name == "report tracked")
    files = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert {"report/report.md", "report/results.csv", "report/best_by_method.png"} <= files
    again = CliRunner().invoke(app, command)
    assert "0 run(s) sent, 2 already there" in again.output and "0 run(s) sent, 1 already there" in again.output
