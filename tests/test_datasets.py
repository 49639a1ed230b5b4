import shutil

import pytest

from transfer.core.errors import UserError
from transfer.data.datasets import SplitPolicy, load_dataset, summarize

from .conftest import make_dataset, make_image, make_pooled


def test_train_test_layout_is_read_in_a_deterministic_class_order(small_data):
    dataset = load_dataset(small_data)
    assert dataset.layout == "train/test"
    assert dataset.classes == ["alpha", "beta", "gamma"]
    assert [len(dataset.samples(s)) for s in ("train", "test")] == [12, 9]
    assert dataset.samples("train")[0].relpath == "train/alpha/img_000.png"
    assert {s.label for s in dataset.samples("test")} == {0, 1, 2}


def test_class_folders_match_across_splits_case_insensitively(small_data):
    (small_data / "test" / "beta").rename(small_data / "test" / "BETA")
    dataset = load_dataset(small_data)
    assert dataset.classes == ["alpha", "beta", "gamma"]
    assert sum(s.label == 1 for s in dataset.samples("test")) == 3


def test_a_class_in_one_split_only_is_an_error_that_names_it(small_data):
    make_image(small_data / "train" / "delta" / "x.png", 3, 0)
    with pytest.raises(UserError, match="delta.*'train' but not in 'test'"):
        load_dataset(small_data)


def test_missing_and_empty_folders_say_what_is_wrong(tmp_path, small_data):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        load_dataset(tmp_path / "empty")
    shutil.rmtree(small_data / "test" / "gamma")
    (small_data / "test" / "gamma").mkdir()
    with pytest.raises(UserError, match="'gamma' has no images"):
        load_dataset(small_data)


def test_non_image_files_are_ignored_and_listed(small_data):
    (small_data / "train" / "alpha" / "notes.txt").write_text("not an image")
    dataset = load_dataset(small_data)
    assert dataset.ignored_files == ["train/alpha/notes.txt"]
    assert len(dataset.samples("train")) == 12


def test_pooled_layout_is_split_reproducibly_by_seed(tmp_path):
    root = make_pooled(tmp_path / "pooled")
    first = load_dataset(root, SplitPolicy(train_per_class=4, seed=1))
    again = load_dataset(root, SplitPolicy(train_per_class=4, seed=1))
    other = load_dataset(root, SplitPolicy(train_per_class=4, seed=2))
    assert first.layout == "pooled"
    assert first.splits == again.splits
    assert first.splits != other.splits
    assert [len(first.samples(s)) for s in ("train", "test")] == [8, 12]
    assert first.fingerprint != other.fingerprint


def test_a_split_too_large_for_the_data_names_the_smallest_class_and_what_the_data_allows(tmp_path):
    root = make_pooled(tmp_path / "pooled", classes=("a", "b", "c"), per_class=10)
    for extra in range(3):
        (root / "b" / f"{extra}.png").unlink()  # b: 7 images, not the first class alphabetically
    with pytest.raises(UserError, match="the smallest class, 'b', has 7 image.*allows at most 6"):
        load_dataset(root, SplitPolicy(train_per_class=8))
    listing = load_dataset(root, SplitPolicy(train_per_class=None))
    assert [len(listing.samples(s)) for s in ("train", "test")] == [27, 0]


def test_data_info_shows_every_class_of_a_folder_no_split_fits(tmp_path):
    from typer.testing import CliRunner

    from transfer.cli.main import app

    root = make_pooled(tmp_path / "pooled", classes=("a", "b"), per_class=5)
    result = CliRunner().invoke(app, ["data", "info", str(root)])
    assert result.exit_code == 0, result.output
    assert "smallest class: 'a', 5 images: --train-per-class can be 1 to 4" in result.output


def test_duplicates_within_and_across_splits_are_listed(small_data):
    shutil.copy(small_data / "train/alpha/img_000.png", small_data / "test/alpha/copy.png")
    shutil.copy(small_data / "train/beta/img_001.png", small_data / "train/beta/copy.png")
    groups = summarize(load_dataset(small_data)).duplicates
    assert [("test", "test/alpha/copy.png"), ("train", "train/alpha/img_000.png")] in groups
    assert [("train", "train/beta/copy.png"), ("train", "train/beta/img_001.png")] in groups
    assert len(groups) == 2


def test_fingerprint_follows_content(tmp_path):
    a = make_dataset(tmp_path / "a")
    b = make_dataset(tmp_path / "b")
    assert load_dataset(a).fingerprint == load_dataset(b).fingerprint  # location does not matter
    make_image(b / "test/gamma/img_000.png", 0, 7)
    assert load_dataset(a).fingerprint != load_dataset(b).fingerprint


def test_unreadable_images_are_counted(small_data):
    (small_data / "test/alpha/img_000.png").write_bytes(b"\x89PNG broken")
    assert summarize(load_dataset(small_data)).unreadable == ["test/alpha/img_000.png"]


def test_the_test_split_can_be_capped_per_class_with_the_split_seed(small_data):
    capped = load_dataset(small_data, SplitPolicy(test_per_class=2))
    assert [len(capped.samples(s)) for s in ("train", "test")] == [12, 6]
    assert capped.samples("test") == load_dataset(small_data, SplitPolicy(test_per_class=2)).samples("test")
    assert capped.fingerprint != load_dataset(small_data).fingerprint
