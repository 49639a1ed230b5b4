"""`transfer` as a library: cached features as arrays, the store as a data frame, and its exports."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import transfer
from transfer.classifiers.settings import GridConfig
from transfer.cli.main import app
from transfer.core.choices import Probe
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec
from transfer.reports.runs_table import COLUMNS
from transfer.runs.jobs import run_svm

from .conftest import LITE0_SPEC

SELECTION = {k: v for k, v in LITE0_SPEC.items() if k not in ("backbone", "weights", "layers")}


def test_features_runs_and_exports_reach_a_notebook(small_data, cache_dir, tmp_path):
    with pytest.raises(UserError, match="transfer extract"):
        transfer.load_features(small_data, "efficientnet_lite0", "avgpool", "random", cache_dir, **SELECTION)
    spec = FeatureSpec(**{**LITE0_SPEC, "layers": ("avgpool",)})
    dataset = load_dataset(small_data)
    extract(dataset, spec, cache_dir)
    features = transfer.load_features(small_data, "efficientnet_lite0", "avgpool", "random", cache_dir, **SELECTION)
    train, test = features.splits["train"], features.splits["test"]
    assert train.features.shape[0] == len(train.labels) == len(train.paths) == 12 and len(test.labels) == 9
    probe = transfer.LinearProbe(probe="knn", k_grid=(1, 3)).fit(train.features, train.labels)
    assert probe.predict(test.features).shape == (9,)

    run_svm(dataset, spec, cache_dir, GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1), probes=(Probe.SVM, Probe.NCM))
    runs = transfer.results(cache_dir)
    assert list(runs.columns) == list(COLUMNS)
    assert runs["probe"].tolist() == ["svm", "ncm"]
    assert runs["model_path"].map(lambda p: p.endswith(".skops")).all()
    assert (runs["test_ci_low"] <= runs["test_accuracy"]).all() and (runs["test_accuracy"] <= runs["test_ci_high"]).all()

    parquet = tmp_path / "runs.parquet"
    for form, out in (("parquet", parquet), ("jsonl", tmp_path / "runs.jsonl")):
        done = CliRunner().invoke(app, ["results", "--cache-dir", str(cache_dir), "--format", form, "--out", str(out)])
        assert done.exit_code == 0, done.output
    table = pq.read_table(parquet)
    assert table.num_rows == 2 and table.column_names == list(COLUMNS)
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == runs["id"].tolist()
    np.testing.assert_allclose([line["test_accuracy"] for line in lines], runs["test_accuracy"])
    refused = CliRunner().invoke(app, ["results", "--cache-dir", str(cache_dir), "--format", "parquet"])
    assert isinstance(refused.exception, UserError) and "--out FILE.parquet" in str(refused.exception)


def test_the_package_names_its_library_lazily():
    assert transfer.LinearProbe is transfer.api.LinearProbe
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = transfer.Nothing


def test_a_cached_layer_exports_with_paths_digests_labels_and_splits(small_data, cache_dir, tmp_path):
    dataset = load_dataset(small_data)
    outcome = extract(dataset, FeatureSpec(**{**LITE0_SPEC, "layers": ("avgpool",)}), cache_dir)
    for name in ("features.parquet", "features.npz"):
        done = CliRunner().invoke(app, ["cache", "export", str(outcome.path), "--data", str(small_data),
                                        "--out", str(tmp_path / name)])
        assert done.exit_code == 0, done.output
    table = pq.read_table(tmp_path / "features.parquet").to_pydict()
    arrays = np.load(tmp_path / "features.npz")
    assert len(table["path"]) == arrays["features"].shape[0] == 21  # 12 training and 9 test images
    assert table["split"].count("test") == 9 and set(table["class"]) == {"alpha", "beta", "gamma"}
    assert table["digest"][0] == dataset.file_digests[table["path"][0]]
    np.testing.assert_array_equal(np.array(table["features"], dtype=np.float32), arrays["features"])
    bad = CliRunner().invoke(app, ["cache", "export", str(outcome.path), "--data", str(small_data),
                                   "--layer", "logits", "--out", str(tmp_path / "x.npz")])
    assert isinstance(bad.exception, UserError) and "has no layer 'logits'" in str(bad.exception)
