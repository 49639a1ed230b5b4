"""A newcomer's first hour and the bad-input probe: each test fails on the code before its fix."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from transfer.classifiers.settings import GridConfig
from transfer.cli.main import app
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.cache import FeatureCache
from transfer.features.extract import extract, resolve
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_svm
from transfer.runs.store import ResultsStore

from .conftest import make_dataset, make_image, make_pooled

RUN = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
GRID = GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1)
LITE = FeatureSpec(backbone="efficientnet_lite0", weights="random", image_size=32, precision="fp32")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "transfer.cli.main", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)


def test_each_backbone_has_a_default_layer_that_commands_and_studies_use(tmp_path, small_data):
    from transfer.study.schema import load_study

    assert FeatureSpec(backbone="efficientnet_lite0").layers == ("avgpool",)
    assert FeatureSpec().layers == ("relu7",)
    study = tmp_path / "study.toml"
    study.write_text(f'[data]\npath = "{small_data}"\n\n[[features]]\nbackbone = "efficientnet_lite0"\n')
    assert load_study(study).features[0].layers == ["avgpool"]
    result = CliRunner().invoke(app, ["svm", "--backbone", "efficientnet_lite0", "--weights", "random", "--data",
                                      str(small_data), "--cache-dir", str(tmp_path / "cache")])
    assert "unknown layer" not in str(result.exception)
    assert "no cached features for avgpool" in str(result.exception)


def test_the_missing_features_message_names_the_cache_in_use_and_following_it_works(tmp_path, small_data):
    import shlex

    cache = tmp_path / "my cache"
    dataset = load_dataset(small_data)
    with pytest.raises(UserError) as raised:
        run_svm(dataset, LITE, cache, GRID)
    command = shlex.split(str(raised.value).splitlines()[-1])
    assert command[:2] == ["transfer", "extract"]
    assert command[command.index("--cache-dir") + 1] == str(cache)
    assert CliRunner().invoke(app, [command[1], *command[2:], "--workers", "0"]).exit_code == 0
    assert run_svm(dataset, LITE, cache, GRID)[0].run_id == 1


def test_a_backbone_without_pooling_variants_says_no_pooling_and_keeps_its_cache(tmp_path, small_data, cache_dir):
    resolved = resolve(LITE, cache_dir)
    assert "-max-" not in resolved.path.name and resolved.path.name.startswith("efficientnet_lite0-fp32-")
    assert "-max-" in resolve(FeatureSpec(weights="random", image_size=32, precision="fp32"), cache_dir).path.name
    key = resolved.key
    earlier = cache_dir / key.earlier_filename  # a user's file from before: found under its new name, same key
    extract(load_dataset(small_data), LITE, cache_dir, RUN)
    resolved.path.rename(earlier)
    assert FeatureCache(cache_dir).path_for(key) == resolved.path and resolved.path.exists() and not earlier.exists()
    run_svm(load_dataset(small_data), LITE, cache_dir, GRID)
    listing = CliRunner().invoke(app, ["results", "--cache-dir", str(cache_dir), "--wide"]).output
    assert "efficientnet_lite0" in listing and " max " not in listing


def test_tables_written_to_a_pipe_keep_their_full_width():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = _cli("layers", "--backbone", "efficientnet_lite0", env=env)
    assert result.returncode == 0, result.stderr
    widths = [len(line) for line in result.stdout.splitlines()]
    assert max(widths) > 80  # the table is wider than the 80 columns rich assumed for a pipe
    rows = {line.split("│")[1].strip(): line.split("│")[5].strip() for line in result.stdout.splitlines()
            if line.startswith("│")}
    assert rows["stem"] == "928" and rows["conv_head"] == "412,160"  # the blocks' own parameters, not 0
    assert rows["logits"] == "1,281,000"


def test_help_texts_say_what_the_code_does():
    finetune = CliRunner().invoke(app, ["finetune", "--help"], env={"COLUMNS": "300"}).output
    assert "checkpoint is written every epoch" not in finetune and "Checkpoints are kept" in finetune
    predict = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "300"}).output
    assert "fisher" in predict and "finetune" in predict and "--models" in predict


def test_inspect_draws_the_most_activated_maps_in_a_bounded_figure():
    import torch

    from transfer.cli.inspect import map_order, maps_figure
    from transfer.features.backbones import Preprocessing

    maps = np.random.default_rng(0).random((1280, 7, 7)).astype(np.float32)
    maps[[5, 900]] += 10
    figure = maps_figure(torch.zeros(3, 32, 32), Preprocessing(), maps, "x", count=64)
    width, height = figure.get_size_inches() * 90  # the dpi `draw_maps` saves at
    assert width < 1600 and height < 1600
    titles = [axis.get_title() for axis in figure.axes[1:-1]]
    assert len(titles) == 64 and "#5" in titles and "#900" in titles
    assert map_order(maps, "activation", 2) == [5, 900]
    assert map_order(maps[:3], "index", 2) == sorted(map_order(maps[:3], "activation", 2))
    largest = maps_figure(torch.zeros(3, 32, 32), Preprocessing(), maps, "x", count=256).get_size_inches() * 90
    assert max(largest) < 2400


def test_svm_prints_the_class_mean_when_test_classes_differ_in_size(tmp_path, small_data, cache_dir):
    for i in range(5):
        make_image(small_data / "test" / "alpha" / f"extra_{i}.png", 0, 200 + i)
    common = ["--data", str(small_data), "--cache-dir", str(cache_dir), "--backbone", "efficientnet_lite0", "--weights",
              "random", "--image-size", "32", "--precision", "fp32"]
    assert CliRunner().invoke(app, ["extract", *common, "--workers", "0"]).exit_code == 0
    result = CliRunner().invoke(app, ["svm", *common, "--C-grid", "0.1,1", "--cv", "2", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "mean of the per-class accuracies" in result.output and "test classes of 3 to 8 images" in result.output
    run = ResultsStore(cache_dir / "results.sqlite").runs()[0]
    expected = np.mean(run.per_class_accuracy)
    assert f"per-class accuracies {100 * expected:.2f}%" in result.output
    balanced = tmp_path / "balanced"


    make_dataset(balanced)
    common[1] = str(balanced)
    CliRunner().invoke(app, ["extract", *common, "--workers", "0"])
    assert "per-class" not in CliRunner().invoke(app, ["svm", *common, "--C-grid", "1", "--cv", "2", "--jobs", "1"]).output


def test_results_lists_each_runs_model_file(small_data, cache_dir):
    dataset = load_dataset(small_data)
    extract(dataset, LITE, cache_dir, RUN)
    outcome = run_svm(dataset, LITE, cache_dir, GRID)[0]
    listing = CliRunner().invoke(app, ["results", "--models", "--cache-dir", str(cache_dir)]).output
    assert f"#{outcome.run_id}  {outcome.model_path}" in listing


def test_extract_on_an_unsplit_folder_takes_every_image_without_split_options(tmp_path, cache_dir):
    pooled = make_pooled(tmp_path / "pooled", per_class=4)
    result = CliRunner().invoke(app, ["extract", "--data", str(pooled), "--cache-dir", str(cache_dir), "--backbone",
                                      "efficientnet_lite0", "--weights", "random", "--image-size", "32", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "extracted 8 images" in result.output and "all images" in result.output


def test_a_damaged_store_row_is_named_left_out_and_its_run_recomputed(small_data, cache_dir, capsys):
    dataset = load_dataset(small_data)
    extract(dataset, LITE, cache_dir, RUN)
    first = run_svm(dataset, LITE, cache_dir, GRID)[0]
    other = run_svm(dataset, LITE, cache_dir, GridConfig(c_grid=(1.0,), cv=2, jobs=1))[0]
    path = cache_dir / "results.sqlite"
    with sqlite3.connect(path) as db:  # SQLite still opens: a flipped byte inside the JSON of one row
        config = db.execute("SELECT config FROM runs WHERE id = ?", (first.run_id,)).fetchone()[0]
        db.execute("UPDATE runs SET config = ? WHERE id = ?", (config.replace("{", "[", 1), first.run_id))
        db.execute("UPDATE runs SET test_accuracy = test_accuracy + 0.25 WHERE id = ?", (other.run_id,))
    store = ResultsStore(path)
    assert store.runs() == []
    assert f"run #{first.run_id}" in capsys.readouterr().err
    result = CliRunner().invoke(app, ["results", "--cache-dir", str(cache_dir)])
    assert result.exception is None and "no runs match" in result.output
    again = run_svm(dataset, LITE, cache_dir, GRID)[0]
    key = json.loads(sqlite3.connect(path).execute("SELECT config FROM runs WHERE id = ?", (again.run_id,)).fetchone()[0])["key"]
    assert store.find(key).id == again.run_id
    assert [run.id for run in store.runs()] == [again.run_id]


def test_a_store_from_before_checksums_is_upgraded_and_keeps_its_rows(tmp_path):
    from transfer.runs.store import RunRecord

    path = tmp_path / "results.sqlite"
    store = ResultsStore(path)
    store.add(RunRecord(method="svm", dataset="d", dataset_fingerprint="f", config={"key": "k1"}, test_accuracy=0.5,
                        classes=["a", "b"]))
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX runs_by_key")  # a store as written before keys and checksums
        db.execute("ALTER TABLE runs DROP COLUMN checksum")
        db.execute("ALTER TABLE runs DROP COLUMN run_key")
    upgraded = ResultsStore(path)
    assert [run.test_accuracy for run in upgraded.runs()] == [0.5] and upgraded.find("k1") is not None


def test_cache_rm_lists_and_asks_before_removing(small_data, cache_dir):
    dataset = load_dataset(small_data)
    extract(dataset, LITE, cache_dir, RUN)
    run_svm(dataset, LITE, cache_dir, GRID)  # a model file: "/" matches every path in a folder of the cache
    files = FeatureCache(cache_dir).matching("/")
    assert [path.parent.name for path in files] == ["models"]
    refused = _cli("cache", "rm", "/", "--cache-dir", str(cache_dir))
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    dry = _cli("cache", "rm", "/", "--dry-run", "--cache-dir", str(cache_dir))
    assert dry.returncode == 0 and "nothing removed" in dry.stdout and str(files[0]) in dry.stdout
    assert FeatureCache(cache_dir).matching("/") == files
    removed = _cli("cache", "rm", "/", "--yes", "--cache-dir", str(cache_dir))
    assert removed.returncode == 0 and FeatureCache(cache_dir).matching("/") == []
    assert len(FeatureCache(cache_dir).artifacts()) == 1  # the extraction, which the pattern did not match


def test_one_training_class_is_named(tmp_path, cache_dir):


    data = make_dataset(tmp_path / "one", classes=("kitchen",))
    dataset = load_dataset(data)
    extract(dataset, LITE, cache_dir, RUN)
    with pytest.raises(UserError, match="only one class \\('kitchen'\\)"):
        run_svm(dataset, LITE, cache_dir, GRID)


def test_explicit_bf16_on_a_cpu_without_it_warns_once_with_the_slowdown(monkeypatch, capsys):
    from transfer.core import device

    monkeypatch.setattr(device, "native_bf16", lambda device: False)
    monkeypatch.setattr(device, "software_bf16_slowdown", lambda: 47.0)
    device._warn_software_bf16.cache_clear()
    assert device.resolve_precision("bf16", "cpu") == "bf16"
    assert device.resolve_precision("bf16", "cpu") == "bf16"
    assert device.resolve_precision("auto", "cpu") == "fp32"
    err = capsys.readouterr().err
    assert err.count("computed in software") == 1 and "47× slower" in err


def test_a_study_names_missing_data_and_weights_in_one_message(tmp_path, monkeypatch):
    from dataclasses import replace

    from transfer.features.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES, "vgg16", replace(BACKBONES["vgg16"], pretrained=replace(BACKBONES["vgg16"].pretrained, missing=lambda: "no network here")))
    monkeypatch.setenv("TRANSFER_15SCENE_URL", "file:///nonexistent/archive.zip")
    monkeypatch.delenv("TRANSFER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text('[data]\nname = "15scene"\n\n[[features]]\nbackbone = "vgg16"\n\n[svm]\n')
    result = CliRunner().invoke(app, ["run", str(study)])
    message = str(result.exception)
    assert isinstance(result.exception, UserError), result.output
    assert "2 input(s)" in message and "data: data/15scene is missing" in message and "vgg16: no network here" in message
    assert "TRANSFER_DATA" in message and "TRANSFER_VGG16_WEIGHTS" in message
    assert not (tmp_path / "data").exists()


def test_the_html_report_fits_its_table_shows_code_not_backticks_and_no_repeated_captions(tmp_path):
    from transfer.reports.report import write_report
    from transfer.runs.store import RunRecord

    run = RunRecord(method="svm", dataset="/data/mine", dataset_fingerprint="f", config={"test_duplicates": 2},
                    test_accuracy=0.9, classes=["a", "b"], backbone="efficientnet_lite0", layer="avgpool", cv_best=0.9,
                    c_grid=[0.1, 1.0], cv_accuracy=[0.8, 0.9], test_accuracy_per_c=[0.85, 0.9], chosen=1.0,
                    confusion=[[5, 0], [1, 4]], per_class_accuracy=[1.0, 0.8])
    page = write_report([run], tmp_path / "report").html.read_text()
    assert "`" not in page and "<code>transfer data info /data/mine</code>" in page
    assert "<figcaption>" not in page
    assert "width: 100%" in page and "<td class=n>90.00</td>" in page
