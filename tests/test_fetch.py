import zipfile

import pytest

import transfer.data.fetch as fetch
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset

from .conftest import make_image


def test_offline_fetch_fails_fast_and_says_how_to_place_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_15SCENE_URL", "http://127.0.0.1:9/15scene.zip")  # nothing listens there
    with pytest.raises(UserError, match=r"could not download .*Place the data by hand.*train/<class>"):
        fetch.fetch("15scene", tmp_path / "15scene")


def test_an_archive_is_checked_and_laid_out_as_train_and_test(tmp_path, monkeypatch):
    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for label, name in enumerate(("Coast", "forest")):
            for i in range(5):
                make_image(tmp_path / "src" / name / f"{i}.png", label, i)
                z.write(tmp_path / "src" / name / f"{i}.png", f"scene_categories/{name}/{i}.png")
    small = fetch.PublicDataset("tiny", archive.as_uri(), "TINY_URL", ("coast", "forest"), 10, 3)
    monkeypatch.setitem(fetch.PUBLIC_DATASETS, "tiny", small)
    dest = fetch.fetch("tiny", tmp_path / "tiny")
    dataset = load_dataset(dest)
    assert dataset.classes == ["coast", "forest"]
    assert [len(dataset.samples(s)) for s in ("train", "test")] == [6, 4]
    with pytest.raises(UserError, match="not empty"):
        fetch.fetch("tiny", dest)
    wrong = fetch.PublicDataset("wrong", archive.as_uri(), "WRONG_URL", ("coast", "forest", "city"), 15, 3)
    monkeypatch.setitem(fetch.PUBLIC_DATASETS, "wrong", wrong)
    with pytest.raises(UserError, match="missing classes: city"):
        fetch.fetch("wrong", tmp_path / "wrong")
