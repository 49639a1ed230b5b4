from pathlib import Path

import numpy as np
import pytest

from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.cache import FeatureCache, read_features
from transfer.features.extract import extract, resolve
from transfer.features.spec import FeatureSpec, RunOptions

from .conftest import LITE0_SPEC, extract_until_killed

# Small and deterministic: random weights, 32×32 crops, fp32.
SPEC = FeatureSpec(weights="random", layers=("relu7", "pool5"), image_size=32, precision="fp32")
RUN = RunOptions(device="cpu", batch_size=2, workers=0, progress=False)


def _all_features(path: Path, layer: str, dataset):
    return read_features(path, layer, dataset).splits


def test_extract_writes_features_labels_and_paths_then_reruns_from_cache(small_data, cache_dir):
    dataset = load_dataset(small_data)
    outcome = extract(dataset, SPEC, cache_dir, RUN)
    assert outcome.images == 21 and not outcome.cached
    assert outcome.shapes["train"] == {"relu7": (12, 4096), "pool5": (12, 512)}
    assert outcome.shapes["test"]["relu7"] == (9, 4096)
    layer = read_features(outcome.path, "relu7", dataset)
    assert layer.classes == ["alpha", "beta", "gamma"]
    assert layer.splits["train"].features.shape == (12, 4096)
    assert list(layer.splits["test"].labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert layer.splits["test"].paths[0] == "test/alpha/img_000.png"
    again = extract(dataset, SPEC, cache_dir, RUN)
    assert again.cached and again.path == outcome.path


def test_adding_a_layer_computes_only_that_layer(small_data, cache_dir):
    dataset = load_dataset(small_data)
    first = extract(dataset, SPEC, cache_dir, RUN)
    before = read_features(first.path, "relu7", dataset).splits["train"].features
    more = FeatureSpec(**{**SPEC.__dict__, "layers": ("relu7", "relu6")})
    second = extract(dataset, more, cache_dir, RUN)
    assert second.path == first.path and second.images == 21
    np.testing.assert_array_equal(read_features(first.path, "relu7", dataset).splits["train"].features, before)
    assert read_features(first.path, "relu6", dataset).splits["train"].features.shape == (12, 4096)


def test_interrupted_extraction_resumes_to_the_same_features(small_data, tmp_path):
    dataset = load_dataset(small_data)
    reference = extract(dataset, SPEC, tmp_path / "reference", RUN)

    def interrupt(rows: int) -> None:
        if rows >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, SPEC, tmp_path / "resumed", RUN, on_batch=interrupt)
    path = resolve(SPEC, tmp_path / "resumed", "cpu").path
    with pytest.raises(UserError, match="not extracted for every train image"):
        read_features(path, "relu7", dataset)  # a half-written file is never taken for a complete one
    resumed = extract(dataset, SPEC, tmp_path / "resumed", RUN)
    assert resumed.images == 21 - 6
    for layer in ("relu7", "pool5"):
        for split in ("train", "test"):
            np.testing.assert_array_equal(
                _all_features(resumed.path, layer, dataset)[split].features,
                _all_features(reference.path, layer, dataset)[split].features,
            )


def test_a_killed_process_leaves_a_file_that_resumes_correctly(small_data, tmp_path):
    """SIGKILL, not an exception: nothing gets to clean up."""
    assert extract_until_killed(small_data, tmp_path / "killed", rows=4, batch_size=2, spec=LITE0_SPEC) == -9
    dataset = load_dataset(small_data)
    resumed = extract(dataset, FeatureSpec(**LITE0_SPEC), tmp_path / "killed", RUN)
    assert resumed.images == 21 - 4
    reference = extract(dataset, FeatureSpec(**LITE0_SPEC), tmp_path / "reference", RUN)
    for split in ("train", "test"):
        np.testing.assert_array_equal(
            _all_features(resumed.path, "conv_head", dataset)[split].features,
            _all_features(reference.path, "conv_head", dataset)[split].features,
        )


def test_unreadable_images_are_skipped_and_listed_or_stop_a_strict_run(small_data, cache_dir):
    good = (small_data / "train/beta/img_000.png").read_bytes()
    (small_data / "train/beta/img_000.png").write_bytes(good[: len(good) // 2])  # truncated
    dataset = load_dataset(small_data)
    with pytest.raises(UserError, match="unreadable image.*train/beta/img_000.png"):
        extract(dataset, SPEC, cache_dir, RunOptions(**{**RUN.__dict__, "strict": True}))
    outcome = extract(dataset, SPEC, cache_dir, RUN)
    assert outcome.skipped == ["train/beta/img_000.png"]
    train = read_features(outcome.path, "relu7", dataset).splits["train"]
    assert train.features.shape == (11, 4096)
    assert "train/beta/img_000.png" not in train.paths
    entry = FeatureCache(cache_dir).entries()[0]
    assert entry.unreadable == 1


def test_spatial_reductions_are_separate_features(small_data, cache_dir):
    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("conv5_3",), spatial="avg", image_size=64, precision="fp32")
    outcome = extract(dataset, spec, cache_dir, RUN)
    assert outcome.shapes["train"] == {"conv5_3:avg": (12, 512)}
    flat = extract(dataset, FeatureSpec(**{**spec.__dict__, "spatial": "flatten"}), cache_dir, RUN)
    assert flat.shapes["train"] == {"conv5_3": (12, 512 * 4 * 4)}
    by_hand = read_features(flat.path, "conv5_3", dataset).splits["train"].features.reshape(12, 512, 16).mean(axis=2)
    np.testing.assert_allclose(read_features(outcome.path, "conv5_3:avg", dataset).splits["train"].features, by_hand, rtol=1e-5, atol=1e-6)


def test_the_kept_heap_is_trimmed_only_when_it_grows_past_its_level(monkeypatch):
    import transfer.core.memory as extraction

    resident = iter([1000, 1100, 1250, 1400, 900, 1200, 1500, 1500, 1100])  # MB after each batch
    trimmed_after = []
    monkeypatch.setattr(extraction, "_resident_mb", lambda: next(resident))
    monkeypatch.setattr(extraction, "release_freed_memory", lambda: trimmed_after.append(batch))
    heap = extraction.KeptHeap(slack_mb=256)
    for batch in range(9):  # noqa: B007 -- the lambda above records it
        heap.after_batch()
    # The level is the first batch's 1000 MB: 1100, 1250, 900 and 1200 stay within 256 MB of it.
    assert trimmed_after == [3, 6, 7]




def test_flip_views_average_the_features_of_the_image_and_its_mirror_image(small_data, tmp_path):
    import shutil

    from PIL import Image, ImageOps

    mirrored = tmp_path / "mirrored"
    shutil.copytree(small_data, mirrored)
    for path in mirrored.rglob("*.png"):
        ImageOps.mirror(Image.open(path)).save(path)
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=56, precision="fp32")  # resize 64: a symmetric crop
    views = {}
    for name, root, chosen in (("plain", small_data, "centre"), ("mirror", mirrored, "centre"), ("flip", small_data, "flip")):
        dataset = load_dataset(root)
        outcome = extract(dataset, FeatureSpec(**{**spec.__dict__, "views": chosen}), tmp_path / "cache", RUN)
        views[name] = read_features(outcome.path, "relu7", dataset).splits["train"].features
    np.testing.assert_allclose(views["flip"], (views["plain"] + views["mirror"]) / 2, rtol=1e-4, atol=1e-5)
    assert not np.allclose(views["flip"], views["plain"])


def test_crop_views_are_their_own_features_and_skip_unreadable_images(small_data, cache_dir):
    good = (small_data / "train/beta/img_000.png").read_bytes()
    (small_data / "train/beta/img_000.png").write_bytes(good[: len(good) // 2])
    dataset = load_dataset(small_data)
    centre = extract(dataset, SPEC, cache_dir, RUN)
    crops = extract(dataset, FeatureSpec(**{**SPEC.__dict__, "views": "10crops"}), cache_dir, RUN)
    assert crops.path != centre.path and crops.skipped == ["train/beta/img_000.png"]
    features = read_features(crops.path, "relu7", dataset).splits["train"].features
    assert features.shape == (11, 4096)
    assert not np.allclose(features, read_features(centre.path, "relu7", dataset).splits["train"].features)


def test_a_batch_holds_batch_size_network_inputs_whatever_the_views():
    from transfer.features.backbones import Preprocessing
    from transfer.features.forward import make_loader

    assert [Preprocessing(views=views).images_per_batch(32) for views in ("centre", "flip", "5crops", "10crops")] == [32, 16, 6, 3]
    assert Preprocessing(views="10crops").images_per_batch(4) == 1  # never an empty batch
    assert make_loader([Path("a.jpg")], Preprocessing(views="10crops"), "cpu", 32, 0).batch_size == 3
