import h5py
import numpy as np
import pytest

import transfer.bow as bow
from transfer.bow import BowConfig, SiftConfig, VocabularyConfig, pyramid_histograms
from transfer.classifiers import GridConfig
from transfer.datasets import load_dataset
from transfer.results import ResultsStore
from transfer.experiments import run_bow

CONFIG = BowConfig(sift=SiftConfig(step=8, sizes=(2.7,)), vocabulary=VocabularyConfig(words=20, sample=2000, epochs=2))
GRID = GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1)


def test_pyramid_histograms_follow_lazebnik_weights():
    # two descriptors of one image: word 0 top-left, word 1 bottom-right
    words = np.array([0, 1])
    positions = np.array([[0.1, 0.1], [0.9, 0.9]], dtype=np.float32)
    offsets = np.array([0, 2])
    plain = pyramid_histograms(words, positions, offsets, 2, 0)
    np.testing.assert_allclose(plain, [[0.5, 0.5]])
    pyramid = pyramid_histograms(words, positions, offsets, 2, 1)
    assert pyramid.shape == (1, 2 + 4 * 2)
    np.testing.assert_allclose(pyramid[0, :2], [0.25, 0.25])  # level 0 weight 1/2
    level1 = pyramid[0, 2:].reshape(4, 2)  # cells row-major: (0,0) (0,1) (1,0) (1,1)
    np.testing.assert_allclose(level1[0], [0.25, 0])
    np.testing.assert_allclose(level1[3], [0, 0.25])
    assert pyramid_histograms(words, positions, offsets, 2, 2).shape == (1, 2 * (1 + 4 + 16))


def test_changing_c_or_pyramid_reuses_descriptors_vocabulary_and_words(small_data, cache_dir, monkeypatch):
    dataset = load_dataset(small_data)
    first = run_bow(dataset, CONFIG, cache_dir, GRID)
    assert first.result.test_accuracy == 1.0  # three stripe frequencies: separable
    files = sorted((cache_dir / "bow").iterdir())
    assert [f.name.split("-")[0] for f in files] == ["sift", "vocab", "words"]
    stamps = {f: f.stat().st_mtime_ns for f in files}

    def no_sift(*args, **kwargs):
        raise AssertionError("descriptors were recomputed")

    monkeypatch.setattr(bow, "dense_sift", no_sift)
    second = run_bow(dataset, BowConfig(sift=CONFIG.sift, vocabulary=CONFIG.vocabulary, pyramid=2), cache_dir, GridConfig(c_grid=(1.0, 10.0), cv=2, jobs=1))
    assert sorted((cache_dir / "bow").iterdir()) == files
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert second.name == "bow-pyramid2"
    runs = ResultsStore(cache_dir / "results.sqlite").runs(method="bow")
    assert [r.layer for r in runs] == ["sift-L0", "sift-L2"]
    assert set(runs[0].timings) >= {"descriptors", "vocabulary", "encoding", "histograms", "fit_seconds"}


def test_interrupted_descriptor_extraction_resumes(small_data, cache_dir, monkeypatch):
    dataset = load_dataset(small_data)
    reference = bow.compute_descriptors(dataset, CONFIG.sift, cache_dir / "ref", jobs=1)
    monkeypatch.setattr(bow, "IMAGES_PER_TASK", 4)
    calls = {"n": 0}
    original = bow._write_sift_batch

    def crash_after_two(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(bow, "_write_sift_batch", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        bow.compute_descriptors(dataset, CONFIG.sift, cache_dir / "resumed", jobs=1)
    monkeypatch.setattr(bow, "_write_sift_batch", original)
    resumed = bow.compute_descriptors(dataset, CONFIG.sift, cache_dir / "resumed", jobs=1)
    with h5py.File(reference) as a, h5py.File(resumed) as b:
        for split in ("train", "test"):
            for name in ("descriptors", "positions", "offsets", "valid"):
                np.testing.assert_array_equal(a[split][name][:], b[split][name][:])


def test_bad_bow_settings_are_refused_where_they_are_built():
    from transfer.config import ConfigError

    with pytest.raises(ConfigError, match="pyramid must be 0, 1, 2 or 3") as error:
        BowConfig(pyramid=5)
    assert error.value.field == "pyramid"
    with pytest.raises(ConfigError, match="words must be between 2 and 65535"):
        VocabularyConfig(words=70_000)
    with pytest.raises(ConfigError, match="step must be at least 1"):
        SiftConfig(step=0)
