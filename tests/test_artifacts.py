"""Stored results and cached files cannot be silently wrong: every artifact is named by what made it,
saved atomically, checksummed, and a damaged one is detected and recomputed."""

import subprocess
import sys
import textwrap
import threading
import zipfile

import h5py
import numpy as np
import pytest

from transfer.cache import FeatureCache, open_h5, read_features
from transfer.classifiers import GridConfig
from transfer.datasets import load_dataset
from transfer.errors import UserError
from transfer.extraction import FeatureSpec, RunOptions, extract
from transfer.heads import HeadSpec, train_head
from transfer.training import TrainConfig
from transfer.modelfile import load_model, save_model
from transfer.predict import predict
from transfer.results import ResultsStore
from transfer.experiments import run_svm

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
        assert model["chosen_c"] == run.chosen
        assert model["model"].named_steps["svm"].C == run.chosen
    features = read_features(next(FeatureCache(cache_dir).files()), "relu7", dataset).splits["test"].features
    for outcome in (first, second):
        expected = outcome.result.model.decision_function(features)
        saved = load_model(outcome.model_path)["model"].decision_function(features)
        np.testing.assert_array_equal(saved, expected)
    top = predict(second.model_path, [small_data / "test"], top=3)
    assert [p.scores[0] for p in top] == pytest.approx(
        np.sort(second.result.model.decision_function(features), axis=1)[:, -1].tolist())


def test_concurrent_saves_of_one_file_never_collide(tmp_path):
    path = tmp_path / "models" / "m.skops"
    errors = []

    def save(worker: int) -> None:
        for i in range(10):
            try:
                save_model(path, {"kind": "svm", "worker": worker, "i": i, "weights": np.full(1000, worker)})
            except Exception as error:  # collected: a failure in a thread would otherwise vanish
                errors.append(error)

    threads = [threading.Thread(target=save, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = load_model(path)
    assert (final["weights"] == final["worker"]).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.skops"]  # no temporary file left


def test_a_truncated_cache_file_is_moved_aside_and_extracted_again(small_data, cache_dir, capsys):
    dataset = load_dataset(small_data)
    path = extract(dataset, SPEC, cache_dir, RUN).path
    original = read_features(path, "relu7", dataset)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again = extract(dataset, SPEC, cache_dir, RUN)
    assert again.images == 21
    assert "is damaged" in capsys.readouterr().err
    assert len(list(cache_dir.glob("*.h5.damaged-*"))) == 1
    np.testing.assert_array_equal(read_features(path, "relu7", dataset).splits["test"].features, original.splits["test"].features)


def _flip_a_feature_byte(path, layer="relu7"):
    with h5py.File(path, "r") as h5:
        chunk = h5["layers"][layer]["values"].id.get_chunk_info(0)
    with open(path, "r+b") as file:
        file.seek(chunk.byte_offset + chunk.size // 2)
        byte = file.read(1)[0]
        file.seek(chunk.byte_offset + chunk.size // 2)
        file.write(bytes([byte ^ 0x40]))


def test_a_bit_flip_in_cached_features_is_detected_and_recomputed(small_data, cache_dir, capsys):
    dataset = load_dataset(small_data)
    path = extract(dataset, SPEC, cache_dir, RUN).path
    clean = _svm(dataset, cache_dir, (0.1, 1.0))
    _flip_a_feature_byte(path)
    with pytest.raises(UserError, match="damaged"):
        read_features(path, "relu7", dataset)
    recomputed = _svm(dataset, cache_dir, (0.1, 1.0))
    assert "is damaged" in capsys.readouterr().err
    assert recomputed.result.cv_mean == clean.result.cv_mean
    assert recomputed.result.test_accuracy_per_c == clean.result.test_accuracy_per_c


def test_a_file_locked_by_another_process_is_waited_for_not_moved(small_data, cache_dir):
    dataset = load_dataset(small_data)
    path = extract(dataset, SPEC, cache_dir, RUN).path
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, h5py
        h5 = h5py.File({str(path)!r}, "a")
        print("open", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(UserError, match="being written by another transfer process"):
            open_h5(path, "a")
        assert path.exists()
        assert list(cache_dir.glob("*.damaged-*")) == []
    finally:
        holder.communicate("")


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


def test_a_damaged_results_store_is_a_clear_error(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(UserError, match="results store .* cannot be read"):
        ResultsStore(path)


def test_cache_rm_reaches_every_kind_of_artifact(tmp_path):
    cache = FeatureCache(tmp_path)
    files = [tmp_path / "vgg16-max-fp32-aaaa.h5", tmp_path / "vgg16-max-fp32-bbbb.h5.damaged-1",
             tmp_path / "bow" / "sift-cccc.h5", tmp_path / "heads" / "fc3-dddd.pt",
             tmp_path / "scratch" / "base-eeee.pt", tmp_path / "models" / "svm-ffff.skops"]
    for path in files:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "results.sqlite").write_bytes(b"x")
    assert cache.artifacts() == sorted(files)
    listed = subprocess.run([sys.executable, "-m", "transfer.cli", "cache", "ls", "--cache-dir", str(tmp_path)],
                            capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    for line in ("damaged, moved aside: 1 file(s)", "bow: 1 file(s)", "heads: 1 file(s)", "scratch: 1 file(s)",
                 "models: 1 file(s)", "unreadable"):
        assert line in listed.stdout, line
    assert cache.remove("heads/") == [tmp_path / "heads" / "fc3-dddd.pt"]
    assert len(cache.remove("all")) == 5
    assert (tmp_path / "results.sqlite").exists()


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
