"""No input ends in a traceback: odd names, odd images, data too small for the protocol, bad options."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from transfer.classifiers.settings import GridConfig
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset, summarize
from transfer.data.images import read_image
from transfer.descriptors.settings import BowConfig, SiftConfig, VocabularyConfig
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.reports.report import write_report
from transfer.runs.jobs import run_bow, run_svm
from transfer.runs.store import ResultsStore

from .conftest import make_dataset, make_image

SPEC = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
LITE0 = FeatureSpec(backbone="efficientnet_lite0", weights="random", image_size=32, precision="fp32")  # quick to build
RUN = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
CLI = [sys.executable, "-m", "transfer.cli.main"]


def _cli(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kwargs)


def test_markup_in_names_is_printed_as_text(tmp_path, cache_dir):
    data = make_dataset(tmp_path / "data", classes=("foo[", "[bold]plain"))
    broken = data / "train" / "foo[" / "x].jpg"  # relative path train/foo[/x].jpg: a closing tag to rich
    broken.write_bytes(b"not an image")
    result = _cli("extract", "--data", data, "--backbone", "efficientnet_lite0", "--weights", "random", "--image-size",
                  32, "--precision", "fp32", "--workers", 0, "--cache-dir", cache_dir, env={"COLUMNS": "300", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "skipping unreadable image train/foo[/x].jpg" in result.stderr
    assert "train/foo[/x].jpg" in result.stdout
    info = _cli("data", "info", data, env={"COLUMNS": "300", "PATH": ""})
    assert info.returncode == 0
    assert "[bold]plain" in info.stdout


def test_a_mathtext_class_name_draws_its_figures(tmp_path, cache_dir):
    dataset = load_dataset(make_dataset(tmp_path / "data", classes=("$x^$", "a_b$")))
    extract(dataset, SPEC, cache_dir, RUN)
    run_svm(dataset, SPEC, cache_dir, GridConfig(c_grid=(1.0,), cv=2, jobs=1))
    files = write_report(ResultsStore(cache_dir / "results.sqlite").runs(), tmp_path / "report")
    assert {"confusion", "per_class"} <= set(files.figures)


def test_a_16_bit_image_reads_as_a_viewer_shows_it(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    image.save(tmp_path / "deep.png")
    pixels = np.asarray(read_image(tmp_path / "deep.png"))[:, :, 0]
    np.testing.assert_allclose(pixels[0], np.linspace(0, 255, 64), atol=1)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, :20] = 255  # left half white as stored
    image = Image.fromarray(pixels, "L")
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = np.asarray(read_image(tmp_path / "phone.jpg"))[:, :, 0]
    assert shown.shape == (40, 20)
    assert shown[:20].mean() > 200  # the stored left half is the top once rotated
    assert shown[20:].mean() < 50


def test_decompression_bombs_are_skipped_with_a_warning(tmp_path, cache_dir, monkeypatch, capsys):
    data = make_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(data / "train" / "beta" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 48×48 images pass, the 120×120 one is a bomb
    dataset = load_dataset(data)
    outcome = extract(dataset, SPEC, cache_dir, RUN)
    assert outcome.skipped == ["train/beta/bomb.png"]
    assert "skipping unreadable image train/beta/bomb.png" in capsys.readouterr().err
    assert summarize(dataset).unreadable == ["train/beta/bomb.png"]


def test_a_one_pixel_image_is_skipped_by_bow(tmp_path, cache_dir, capsys):
    data = make_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(data / "train" / "alpha" / "dot.png")
    config = BowConfig(sift=SiftConfig(step=8, sizes=(2.7,)), vocabulary=VocabularyConfig(words=20, sample=2000, epochs=2))
    outcome = run_bow(load_dataset(data), config, cache_dir, GridConfig(c_grid=(1.0,), cv=2, jobs=1))
    assert "skipping unreadable image train/alpha/dot.png: too small for dense SIFT" in capsys.readouterr().err
    assert len(outcome.result.confusion) == 3


def test_three_images_per_class_gives_advice_not_a_traceback(tmp_path):
    data = make_dataset(tmp_path / "data", classes=tuple("abcdefghijklmno"), train=3, test=2)
    for command in (["finetune", "--backbone", "efficientnet_lite0"], ["scratch", "--epochs", "1"]):
        result = _cli(*command, "--data", data, "--weights" if command[0] == "finetune" else "--size",
                      "random" if command[0] == "finetune" else 32, "--cache-dir", tmp_path / "cache")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "use a --val-fraction between 0.33 and 0.67" in result.stderr


def test_one_class_is_refused(tmp_path):
    data = make_dataset(tmp_path / "data", classes=("only",))
    result = _cli("finetune", "--data", data, "--weights", "random", "--backbone", "efficientnet_lite0",
                  "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert "1 class(es): a classifier needs at least two" in result.stderr


@pytest.mark.parametrize("option, message", [(("svm", "--jobs", "0"), "jobs must be"),
                                             (("extract", "--workers", "-1"), "workers must be 0"),
                                             (("bow", "--jobs", "0"), "jobs must be")])
def test_impossible_process_counts_are_one_line_errors(small_data, tmp_path, option, message):
    result = _cli(*option, "--data", small_data, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_weights_file_that_is_not_a_state_dict_is_a_clear_error(tmp_path, small_data):
    import torch

    (tmp_path / "text.pth").write_text("not weights")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    for name, message in (("text.pth", "does not load as a torch file"), ("tensor.pth", "holds a Tensor"),
                          ("partial.pth", "of its weights missing")):
        with pytest.raises(UserError, match=message):
            extract(load_dataset(small_data), FeatureSpec(weights=str(tmp_path / name), image_size=32), tmp_path / "c", RUN)


def test_duplicates_across_splits_are_reported_where_results_are_made(tmp_path, cache_dir):
    data = make_dataset(tmp_path / "data")
    (data / "test" / "alpha" / "copy.png").write_bytes((data / "train" / "alpha" / "img_000.png").read_bytes())
    dataset = load_dataset(data)
    assert dataset.test_duplicates() == ["test/alpha/copy.png"]
    result = _cli("extract", "--data", data, "--backbone", "efficientnet_lite0", "--weights", "random", "--image-size",
                  32, "--precision", "fp32", "--cache-dir", cache_dir, "--workers", 0, env={"COLUMNS": "300", "PATH": ""})
    assert "note: 1 test image(s) are byte-identical to training images" in result.stderr
    run_svm(dataset, LITE0, cache_dir, GridConfig(c_grid=(1.0,), cv=2, jobs=1))
    files = write_report(ResultsStore(cache_dir / "results.sqlite").runs(), tmp_path / "report")
    assert "1 test image(s) of" in files.markdown.read_text()
    assert "byte-identical to training images" in files.html.read_text()


def test_image_sizes_are_read_from_headers_for_data_info(tmp_path):
    make_image(tmp_path / "data" / "train" / "a" / "x.png", 0, 0)
    make_image(tmp_path / "data" / "test" / "a" / "x.png", 0, 1)
    make_image(tmp_path / "data" / "train" / "b" / "x.png", 1, 0)
    make_image(tmp_path / "data" / "test" / "b" / "x.png", 1, 1)
    summary = summarize(load_dataset(tmp_path / "data"))
    assert dict(summary.sizes) == {(48, 48): 4}
