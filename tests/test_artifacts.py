"""Stored results and cached files cannot be silently wrong: every artifact is named by what made it,
saved atomically, checksummed, and a damaged one is detected and recomputed."""

import threading
import zipfile

import numpy as np
import pytest

from transfer.classifiers.heads import HeadSpec, train_head
from transfer.classifiers.settings import GridConfig
from transfer.classifiers.training import TrainConfig
from transfer.core.archive import load_estimator
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.cache import FeatureCache, read_features
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_svm
from transfer.runs.models import load_model, save_payload
from transfer.runs.predict import predict
from transfer.runs.store import ResultsStore

SPEC = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
RUN = RunOptions(device="cpu", batch_size=4, workers=0, progress=False)


def _svm(dataset, cache_dir, c_grid):
    (outcome,) = run_svm(dataset, SPEC, cache_dir, GridConfig(c_grid=c_grid, cv=2, jobs=1))
    return outcome


def test_two_grids_give_two_model_files_and_predict_uses_each_runs_own(small_data, cache_dir):
    dataset = load_dataset(small_data)
    extract(dataset, SPEC, cache_dir, RUN)
    first, second = _svm(dataset, cache_dir, (0.01,)), _svm(dataset, cache_dir, (10.0,))
    assert first.model_path != second.model_path
    runs = ResultsStore(cache_dir / "results.sqlite").runs(method="svm")
    assert [run.chosen for run in runs] == [0.01, 10.0]
    for run in runs:
        model = load_model(run.model_path)
        assert model.chosen_c == run.chosen
        assert model.model.named_steps["svm"].C == run.chosen
    features = read_features(next(FeatureCache(cache_dir).files()), "relu7", dataset).splits["test"].features
    for outcome in (first, second):
        expected = outcome.result.model.decision_function(features)
        saved = load_model(outcome.model_path).model.decision_function(features)
        np.testing.assert_array_equal(saved, expected)
    top = predict(second.model_path, [small_data / "test"], top=3, device="cpu")  # where the features were extracted
    assert [p.scores[0] for p in top] == pytest.approx(
        np.sort(second.result.model.decision_function(features), axis=1)[:, -1].tolist())


def test_concurrent_saves_of_one_file_never_collide(tmp_path):
    path = tmp_path / "models" / "m.skops"
    errors = []

    def save(worker: int) -> None:
        for i in range(10):
            try:
                save_payload(path, {"kind": "svm", "worker": worker, "i": i, "weights": np.full(1000, worker)})
            except Exception as error:  # collected: a failure in a thread would otherwise vanish
                errors.append(error)

    threads = [threading.Thread(target=save, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = load_estimator(path, "a model file")  # the raw payload: a real model file has more fields
    assert (final["weights"] == final["worker"]).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.skops"]  # no temporary file left


def test_a_bit_flip_in_a_model_file_is_an_error_not_a_score(small_data, cache_dir):
    dataset = load_dataset(small_data)
    extract(dataset, SPEC, cache_dir, RUN)
    path = _svm(dataset, cache_dir, (1.0,)).model_path
    with zipfile.ZipFile(path) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    start = largest.header_offset + 30 + len(largest.filename.encode()) + len(largest.extra)
    data[start + largest.compress_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        predict(path, [small_data / "test"])


def test_a_resumed_training_with_dropout_equals_an_uninterrupted_one(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    train, test = (x + y[:, None], y), (x[:15] + y[:15, None], y[:15])
    spec = HeadSpec(name="mlp:16", hidden=(16,), dropout=0.5)
    config = TrainConfig(epochs=5, patience=100, batch_size=8)
    whole = train_head(spec, train, test, 3, config, tmp_path / "whole.pt")

    def stop_after_two(epoch, curves):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_head(spec, train, test, 3, config, tmp_path / "resumed.pt", progress=stop_after_two)
    resumed = train_head(spec, train, test, 3, config, tmp_path / "resumed.pt")
    assert resumed.resumed_at == 2
    assert resumed.curves["train_loss"] == whole.curves["train_loss"]
    for name, tensor in whole.head.state_dict().items():
        assert (resumed.head.state_dict()[name] == tensor).all(), name


def test_a_bit_flip_in_a_checkpoint_restarts_training_instead_of_resuming_from_it(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 6)).astype(np.float32), np.repeat(np.arange(3), 10)
    config = TrainConfig(epochs=2, patience=100, batch_size=8)
    checkpoint = tmp_path / "head.pt"
    first = train_head(HeadSpec(name="fc3"), (x, y), (x, y), 3, config, checkpoint)
    with zipfile.ZipFile(checkpoint) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(checkpoint.read_bytes())
    data[largest.header_offset + 30 + len(largest.filename.encode()) + len(largest.extra) + largest.compress_size // 2] ^= 1
    checkpoint.write_bytes(bytes(data))
    again = train_head(HeadSpec(name="fc3"), (x, y), (x, y), 3, config, checkpoint)
    assert "bad CRC-32" in capsys.readouterr().err
    assert again.resumed_at == 0
    assert again.curves["val_loss"] == first.curves["val_loss"]  # a whole new training, equal to the first
