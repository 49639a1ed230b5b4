"""The feature cache: rows keyed by image content, never stale; damage detected and recomputed; locks
respected; every artifact reachable by `cache rm`."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.cache import FeatureCache, open_h5, read_features
from transfer.features.extract import extract, resolve
from transfer.features.spec import FeatureSpec

from .conftest import make_image, make_pooled
from .test_artifacts import RUN, SPEC, _svm


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
    assert recomputed.result.test_per_setting == clean.result.test_per_setting


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
    listed = subprocess.run([sys.executable, "-m", "transfer.cli.main", "cache", "ls", "--cache-dir", str(tmp_path)],
                            capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    for line in ("damaged, moved aside: 1 file(s)", "bow: 1 file(s)", "heads: 1 file(s)", "scratch: 1 file(s)",
                 "models: 1 file(s)", "unreadable"):
        assert line in listed.stdout, line
    assert cache.remove("heads/") == [tmp_path / "heads" / "fc3-dddd.pt"]
    assert len(cache.remove("all")) == 5
    assert (tmp_path / "results.sqlite").exists()


def test_changed_weights_pooling_precision_or_colour_never_reuse_stale_features(cache_dir):
    base = resolve(SPEC, cache_dir, "cpu").path
    assert resolve(FeatureSpec(**{**SPEC.__dict__, "pooling": "avg"}), cache_dir, "cpu").path != base
    assert resolve(FeatureSpec(**{**SPEC.__dict__, "precision": "bf16"}), cache_dir, "cpu").path != base
    assert resolve(FeatureSpec(**{**SPEC.__dict__, "color": True}), cache_dir, "cpu").path != base
    assert resolve(FeatureSpec(**{**SPEC.__dict__, "image_size": 48}), cache_dir, "cpu").path != base


def test_a_changed_image_is_extracted_again_and_only_it(small_data, cache_dir):
    dataset = load_dataset(small_data)
    before = read_features(extract(dataset, SPEC, cache_dir, RUN).path, "relu7", dataset).splits["test"].features
    make_image(small_data / "test/alpha/img_000.png", 2, 55)  # new content under the same name
    changed = load_dataset(small_data)
    outcome = extract(changed, SPEC, cache_dir, RUN)
    assert outcome.images == 1
    after = read_features(outcome.path, "relu7", changed).splits["test"].features
    assert not np.array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1:], before[1:])


def test_features_are_keyed_by_image_content_not_by_split(tmp_path, cache_dir):
    """A pooled folder re-split with another seed, or listed again elsewhere, reuses every row."""
    from transfer.data.datasets import SplitPolicy

    pooled = make_pooled(tmp_path / "pooled", per_class=6)
    first = load_dataset(pooled, SplitPolicy(train_per_class=3, seed=0))
    reseeded = load_dataset(pooled, SplitPolicy(train_per_class=3, seed=1))
    assert first.fingerprint != reseeded.fingerprint
    assert extract(first, SPEC, cache_dir, RUN).images == 12
    outcome = extract(reseeded, SPEC, cache_dir, RUN)
    assert outcome.images == 0
    assert outcome.shapes["train"]["relu7"] == (6, 4096)
    by_path = {}
    for dataset in (first, reseeded):
        for split in read_features(outcome.path, "relu7", dataset).splits.values():
            for path, row in zip(split.paths, split.features):
                by_path.setdefault(path, []).append(row)
    assert all(np.array_equal(rows[0], rows[1]) for rows in by_path.values())
    assert len(by_path) == 12


def test_byte_identical_images_are_computed_once(small_data, cache_dir):
    copy = small_data / "test/alpha/copy.png"
    copy.write_bytes((small_data / "train/alpha/img_000.png").read_bytes())
    dataset = load_dataset(small_data)
    outcome = extract(dataset, SPEC, cache_dir, RUN)
    assert outcome.images == 21
    features = read_features(outcome.path, "relu7", dataset).splits
    test_paths = features["test"].paths
    np.testing.assert_array_equal(features["test"].features[test_paths.index("test/alpha/copy.png")],
                                  features["train"].features[0])


@pytest.mark.parametrize("extracted", ["fp32", "bf16"])
def test_a_reader_asking_for_auto_precision_finds_what_any_device_extracted(small_data, cache_dir, extracted):
    """The key never depends on the reader: `svm` has no --device, the extraction may have run elsewhere."""
    from transfer.features.extract import cached_features

    dataset = load_dataset(small_data)
    extract(dataset, FeatureSpec(**{**SPEC.__dict__, "precision": extracted}), cache_dir, RUN)
    found = cached_features(dataset, FeatureSpec(**{**SPEC.__dict__, "precision": "auto"}), cache_dir)
    assert found.key.precision == extracted


def test_a_file_of_an_earlier_cache_format_is_listed_as_such_and_never_read(cache_dir):
    cache_dir.mkdir(parents=True)
    old = cache_dir / "vgg16-max-fp32-0123456789abcdef.h5"
    with h5py.File(old, "w") as h5:
        h5.attrs["format"] = 2
        h5.attrs["key"] = "{}"
    (entry,) = FeatureCache(cache_dir).entries()
    assert entry.earlier_format == 2
    assert entry.layers == {}
