import h5py
import numpy as np
import pytest
from PIL import Image

import transfer.descriptors.bow as bow
from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import plain_svm
from transfer.core.config import ConfigError
from transfer.data.datasets import load_dataset
from transfer.descriptors.bow import dense_sift, intersection_kernel, pyramid_histograms
from transfer.descriptors.settings import BowConfig, SiftConfig, VocabularyConfig
from transfer.runs.jobs import run_bow
from transfer.runs.store import ResultsStore

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


def test_bands_add_three_horizontal_regions_weighted_as_level_one():
    words = np.array([0, 1])
    positions = np.array([[0.1, 0.1], [0.9, 0.9]], dtype=np.float32)  # word 0 in the top band, word 1 in the bottom one
    offsets = np.array([0, 2])
    with_bands = pyramid_histograms(words, positions, offsets, 2, 1, bands=True)
    np.testing.assert_array_equal(with_bands[:, :10], pyramid_histograms(words, positions, offsets, 2, 1))
    np.testing.assert_allclose(with_bands[0, 10:].reshape(3, 2), [[0.25, 0], [0, 0], [0, 0.25]])  # level 1 weight 1/2


def test_changing_c_or_pyramid_reuses_vocabulary_and_words(small_data, cache_dir, monkeypatch):
    dataset = load_dataset(small_data)
    first = run_bow(dataset, CONFIG, cache_dir, GRID)
    assert first.result.test_accuracy == 1.0  # three stripe frequencies: separable
    files = sorted((cache_dir / "bow").iterdir())
    assert [f.name.split("-")[0] for f in files] == ["vocab", "words"]  # no descriptors stored
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
    assert set(runs[0].timings) >= {"vocabulary", "encoding", "histograms", "fit_seconds"}


def test_interrupted_encoding_resumes(small_data, cache_dir, monkeypatch):
    dataset = load_dataset(small_data)
    kmeans, vocab_path = bow.build_vocabulary(dataset, CONFIG.sift, CONFIG.vocabulary, cache_dir, jobs=1)
    reference = bow.encode(dataset, CONFIG.sift, kmeans, vocab_path, cache_dir / "ref", jobs=1)
    monkeypatch.setattr(bow, "IMAGES_PER_TASK", 4)
    calls = {"n": 0}
    original = bow._write_words_batch

    def crash_after_two(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(bow, "_write_words_batch", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        bow.encode(dataset, CONFIG.sift, kmeans, vocab_path, cache_dir / "resumed", jobs=1)
    monkeypatch.setattr(bow, "_write_words_batch", original)
    resumed = bow.encode(dataset, CONFIG.sift, kmeans, vocab_path, cache_dir / "resumed", jobs=1)
    with h5py.File(reference) as a, h5py.File(resumed) as b:
        for split in ("train", "test"):
            for name in ("words", "positions", "offsets", "valid"):
                np.testing.assert_array_equal(a[split][name][:], b[split][name][:])


def test_the_descriptor_sample_does_not_depend_on_the_number_of_cores(small_data):
    dataset = load_dataset(small_data)
    one = bow.training_sample(dataset, CONFIG.sift, 300, seed=3, jobs=1)
    two = bow.training_sample(dataset, CONFIG.sift, 300, seed=3, jobs=2)
    assert one.shape == (300, 128)
    np.testing.assert_array_equal(one, two)


def test_bad_bow_settings_are_refused_where_they_are_built():
    with pytest.raises(ConfigError, match="pyramid must be 0, 1, 2 or 3") as error:
        BowConfig(pyramid=5)
    assert error.value.field == "pyramid"
    with pytest.raises(ConfigError, match="words must be between 2 and 65535"):
        VocabularyConfig(words=70_000)
    with pytest.raises(ConfigError, match="step must be at least 1"):
        SiftConfig(step=0)
    with pytest.raises(ConfigError, match="kernel 'rbf' is not one of: chi2, intersection") as error:
        BowConfig(kernel="rbf")
    assert error.value.field == "kernel"
    with pytest.raises(ConfigError, match="contrast must be 0"):
        SiftConfig(contrast=-1)
    with pytest.raises(ConfigError, match="use them with a pyramid of 1 or more levels") as error:
        BowConfig(bands=True)
    assert error.value.field == "bands"


def _histograms(rows: int, seed: int) -> np.ndarray:
    counts = np.random.default_rng(seed).poisson(0.7, (rows, 40)).astype(np.float32)
    return counts / counts.sum(axis=1, keepdims=True)


def test_the_intersection_kernel_is_the_sum_of_minima():
    a, b = _histograms(5, 0), _histograms(7, 1)
    expected = np.minimum(a[:, None, :], b[None, :, :]).sum(axis=2)
    np.testing.assert_allclose(intersection_kernel(a, b), expected, atol=1e-6)


def test_the_intersection_map_is_exact_and_its_model_acts_on_histograms():
    train, test = _histograms(60, 2), _histograms(20, 3)
    labels = np.arange(60) % 3
    splits, to_histograms = bow._intersection_map({"train": (train, labels), "test": (test, labels[:20])})
    mapped = splits["train"][0]
    np.testing.assert_allclose(mapped @ mapped.T, intersection_kernel(train, train), atol=1e-5)
    svm = plain_svm(1.0).fit(mapped, labels)
    model = to_histograms(svm)
    np.testing.assert_allclose(model.decision_function(test), svm.decision_function(splits["test"][0]), atol=1e-6)


def test_the_intersection_kernel_runs_end_to_end_and_is_recorded(small_data, cache_dir):
    dataset = load_dataset(small_data)
    outcome = run_bow(dataset, BowConfig(sift=CONFIG.sift, vocabulary=CONFIG.vocabulary, pyramid=1, kernel="intersection"), cache_dir, GRID)
    assert outcome.name == "bow-pyramid1-intersection"
    assert outcome.result.test_accuracy == 1.0  # three stripe frequencies: separable
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="bow")[-1]
    assert run.config["kernel"] == "intersection"


def _half_flat_image(path):
    """Faint noise on the left half (normalisation stretches it to unit-length descriptors), stripes on the right."""
    pixels = (128 + np.random.default_rng(0).integers(-1, 2, (64, 128))).astype(np.uint8)
    pixels[:, 64:] = np.where((np.arange(64)[None, :] // 3) % 2, 40, 220)  # stripes on the right half
    Image.fromarray(pixels).save(path)
    return path


def test_contrast_shortens_the_descriptors_of_flat_patches_only(tmp_path):
    path = _half_flat_image(tmp_path / "half.png")
    plain, positions = dense_sift(path, SiftConfig(step=8, sizes=(2.7,), contrast=0))
    scaled, same_positions = dense_sift(path, SiftConfig(step=8, sizes=(2.7,), contrast=2.5))
    np.testing.assert_array_equal(positions, same_positions)
    flat, textured = positions[:, 0] < 0.3, positions[:, 0] > 0.7
    norms = np.linalg.norm(scaled.astype(np.float32), axis=1)
    assert norms[flat].max() < 0.5 * np.linalg.norm(plain[flat].astype(np.float32), axis=1).min()
    np.testing.assert_array_equal(scaled[textured], plain[textured])


def test_model_files_from_before_the_contrast_setting_computed_none():
    assert SiftConfig.from_dict({"step": 4, "sizes": [2.7], "max_side": 300}).contrast == 0
    assert BowConfig.from_dict({"sift": {"step": 4, "sizes": [2.7]}, "vocabulary": {}, "pyramid": 0, "sqrt": False}).kernel == "chi2"


def test_dense_sift_matches_opencvs_descriptors_on_a_grid(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (96, 96)).astype(np.float32), (0, 0), 2)  # smooth texture
    path = tmp_path / "texture.png"
    Image.fromarray(np.clip(pixels * 3 - 256, 0, 255).astype(np.uint8)).save(path)
    config = SiftConfig(step=8, sizes=(2.7, 4.5), contrast=0)
    ours, positions = dense_sift(path, config)
    keypoints = [cv2.KeyPoint(float(x * 96), float(y * 96), size) for size, (x, y) in zip(np.repeat(config.sizes, len(ours) // 2), positions)]
    keypoints, theirs = cv2.SIFT_create().compute(np.asarray(Image.open(path)), keypoints)
    assert len(keypoints) == len(ours)
    a, b = ours.astype(np.float32), theirs.astype(np.float32)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.median(cosine) > 0.99
