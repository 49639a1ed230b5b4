"""Files a user loads never run code: model files, head checkpoints, BoW vocabularies; and nothing is
written outside its folder."""

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer.classifiers.heads import HeadSpec, train_head
from transfer.classifiers.settings import GridConfig
from transfer.classifiers.training import TrainConfig
from transfer.core.archive import load_estimator, save_estimator
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.descriptors.settings import BowConfig, SiftConfig, VocabularyConfig
from transfer.features.cache import FeatureCache
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_bow, run_svm
from transfer.runs.models import load_model
from transfer.runs.predict import predict
from transfer.study.schema import load_study

SPEC = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
RUN = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
GRID = GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1)


class Touch:
    """Unpickling this creates ``marker``: the proof that a file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class Planted:
    """An object of a type that no transfer file holds; restoring it would create ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state):
        Path(state["marker"]).touch()


def test_a_pickled_model_file_is_refused_and_never_run(tmp_path, small_data):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.joblib"
    evil.write_bytes(pickle.dumps({"kind": "svm", "format": 1, "payload": Touch(marker)}))
    with pytest.raises(UserError, match="pickle-based model file"):
        predict(evil, [small_data])
    assert not marker.exists()
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "predict", str(evil), str(small_data)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_skops_file_with_a_foreign_type_is_refused_before_anything_is_built(tmp_path, small_data):
    marker = tmp_path / "ran"
    planted = save_estimator(tmp_path / "planted.skops", {"kind": "svm", "format": 2, "model": Planted(str(marker))})
    with pytest.raises(UserError, match="Planted"):
        predict(planted, [small_data])
    assert not marker.exists()


def _renamed_module(path: Path, old: str, new: str) -> None:
    """Rewrite a skops file's schema as if a function lived in module ``new`` (written by an older transfer)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["schema.json"] = members["schema.json"].replace(json.dumps(old).encode(), json.dumps(new).encode())
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_model_files_written_before_the_subpackages_load_with_todays_functions(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    from transfer.classifiers.svm import signed_sqrt
    from transfer.descriptors.bow import intersection_kernel

    path = save_estimator(tmp_path / "old.skops", [FunctionTransformer(signed_sqrt), FunctionTransformer(intersection_kernel)])
    _renamed_module(path, "transfer.classifiers.svm", "transfer.classifiers")
    _renamed_module(path, "transfer.descriptors.bow", "transfer.bow")
    assert b'"transfer.bow"' in zipfile.ZipFile(path).read("schema.json")
    power, kernel = load_estimator(path, "a test file")
    assert power.func is signed_sqrt and kernel.func is intersection_kernel
    _renamed_module(path, "transfer.bow", "transfer.elsewhere")  # a name that never was ours stays refused
    with pytest.raises(UserError, match="transfer.elsewhere.intersection_kernel"):
        load_estimator(path, "a test file")


def test_an_old_pickled_model_file_is_refused_with_how_to_recreate_it(tmp_path, small_data, cache_dir):
    import joblib

    dataset = load_dataset(small_data)
    extract(dataset, SPEC, cache_dir, RUN)
    (outcome,) = run_svm(dataset, SPEC, cache_dir, GRID)
    joblib.dump({**load_estimator(outcome.model_path, "a model file"), "format": 1}, tmp_path / "old.joblib")  # as earlier versions saved
    with pytest.raises(UserError, match="pickle-based model file .* Re-create it by re-running the command"):
        predict(tmp_path / "old.joblib", [small_data / "test"])


def _blobs(n_per_class, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (3, 8))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (n_per_class, 8)) for c in range(3)]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per_class)


def test_a_planted_checkpoint_never_runs_and_training_starts_afresh(tmp_path, capsys):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "head.pt"
    torch.save({"model": Touch(marker)}, checkpoint)
    config = TrainConfig(epochs=3, patience=100, batch_size=16)
    planted = train_head(HeadSpec(name="fc3"), _blobs(10), _blobs(5, 1), 3, config, checkpoint)
    assert not marker.exists()
    assert "moved to head.pt.damaged-" in capsys.readouterr().err
    assert len(list(tmp_path.glob("head.pt.damaged-*"))) == 1
    clean = train_head(HeadSpec(name="fc3"), _blobs(10), _blobs(5, 1), 3, config, tmp_path / "clean.pt")
    assert planted.curves["val_acc"] == clean.curves["val_acc"]
    assert planted.test_accuracy == clean.test_accuracy


def test_a_planted_vocabulary_never_runs_and_is_rebuilt(small_data, cache_dir):
    marker = cache_dir.parent / "ran"
    config = BowConfig(sift=SiftConfig(step=8, sizes=(2.7,)), vocabulary=VocabularyConfig(words=20, sample=2000, epochs=2))
    dataset = load_dataset(small_data)
    first = run_bow(dataset, config, cache_dir, GRID)
    (vocabulary,) = (cache_dir / "bow").glob("vocab-*.skops")
    vocabulary.write_bytes(pickle.dumps(Touch(marker)))
    second = run_bow(dataset, config, cache_dir, GridConfig(c_grid=(0.3,), cv=2, jobs=1))
    assert not marker.exists()
    assert len(list((cache_dir / "bow").glob("vocab-*.damaged-*"))) == 1
    np.testing.assert_allclose(load_model(second.model_path).encoder.cluster_centers_,
                               load_model(first.model_path).encoder.cluster_centers_)


def test_a_study_report_name_cannot_leave_reports(tmp_path, small_data):
    for name in ("../../x", "/tmp/x", "a/b", ".."):
        study = tmp_path / "study.toml"
        study.write_text(f'[data]\npath = "{small_data}"\n\n[report]\nname = "{name}"\n')
        with pytest.raises(UserError, match=r"study.toml:5: report name .* must be a plain folder name"):
            load_study(study)


def test_report_and_cache_rm_refuse_what_would_reach_outside(tmp_path, small_data, cache_dir):
    dataset = load_dataset(small_data)
    extract(dataset, SPEC, cache_dir, RUN)
    cli = [sys.executable, "-m", "transfer.cli.main"]
    result = subprocess.run([*cli, "cache", "rm", "", "--cache-dir", str(cache_dir)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "empty pattern" in result.stderr
    assert len(FeatureCache(cache_dir).artifacts()) == 1
    run_svm(dataset, SPEC, cache_dir, GRID)
    result = subprocess.run([*cli, "report", "--name", "../escape", "--cache-dir", str(cache_dir)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "must be a plain folder name" in result.stderr
    assert not (tmp_path.parent / "escape").exists()
