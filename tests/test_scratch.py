"""From-scratch CNNs: architectures, ladder, and the honesty of normalisation, augmentation and early stopping."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import make_dataset
from transfer.classifiers import scratch
from transfer.classifiers.scratch import (
    ScratchConfig,
    ladder,
    load_images,
    parse_grid,
    summarize_network,
    train_scratch,
)
from transfer.classifiers.training import Compute, TrainConfig
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.runs.jobs import run_scratch, scratch_key
from transfer.runs.store import ResultsStore

FAST = TrainConfig(lr=0.05, momentum=0.0, weight_decay=0.0, schedule="none", batch_size=8, epochs=3, patience=8)


@pytest.fixture
def images(tmp_path):
    return load_images(load_dataset(make_dataset(tmp_path / "data", train=10, test=4)), size=16)


def test_base_has_the_published_parameter_count_and_the_variants_stay_small():
    rows = summarize_network("base", n_classes=10, size=32)
    assert sum(r.parameters for r in rows) == 1_191_170
    conv1 = rows[0]
    assert conv1.output == (32, 32, 32) and conv1.macs == 32 * 32 * 32 * 3 * 5 * 5
    assert rows[-1].output == (10,) and rows[-1].macs == 1000 * 10
    for arch in ("wide", "deep", "widedeep"):
        assert sum(r.parameters for r in summarize_network(arch, 10, 32, batchnorm=True)) < 256_000, arch
    with pytest.raises(UserError, match="unknown arch"):
        summarize_network("huge")


def test_the_ladder_adds_one_step_at_a_time():
    steps = ladder(ScratchConfig(train=FAST))
    assert [name for name, _ in steps] == ["baseline", "+normalize", "+augment", "+momentum/schedule", "+dropout", "+batchnorm"]
    last = steps[-1][1]
    assert last.normalize and last.augment == ("crop", "flip") and last.dropout == 0.5 and last.batchnorm
    assert last.train.momentum == 0.9 and last.train.schedule == "exp"
    assert steps[0][1].train.momentum == 0.0 and not steps[0][1].normalize
    assert parse_grid("lr=0.01,0.1,batch=32,64,dropout=0,0.5") == {"lr": [0.01, 0.1], "batch": [32, 64], "dropout": [0.0, 0.5]}
    with pytest.raises(UserError, match="KEY=V1"):
        parse_grid("depth=3")


def test_normalisation_statistics_come_from_the_training_part_only(images, tmp_path):
    config = ScratchConfig(size=16, normalize=True, train=replace(FAST, epochs=1))
    first = train_scratch(images, config, tmp_path / "a.pt")
    x_train, y_train = images.splits["train"]
    fit, _ = scratch.validation_split(y_train.numpy(), FAST.val_fraction, FAST.seed)
    assert np.allclose(first.mean, scratch.channel_stats(x_train[torch.from_numpy(fit)])[0])
    tampered = replace(images, splits={**images.splits, "test": (torch.full_like(images.splits["test"][0], 255), images.splits["test"][1])})
    second = train_scratch(tampered, config, tmp_path / "b.pt")
    assert first.mean == second.mean and first.std == second.std


def test_augmentation_is_applied_in_training_only(images, tmp_path, monkeypatch):
    calls = []
    real = scratch.random_crops_and_flips

    def counting(batch, augment, out, generator):
        calls.append(len(batch))
        return real(batch, augment, out, generator)

    monkeypatch.setattr(scratch, "random_crops_and_flips", counting)
    config = ScratchConfig(size=16, augment=("crop", "flip"), train=replace(FAST, epochs=2))
    result = train_scratch(images, config, tmp_path / "c.pt")
    n_fit = 30 - 6  # 3 classes × 10 training images, a stratified 20% held out for validation
    assert sum(calls) == 2 * n_fit  # every training image once per epoch, nothing else
    assert config.input_size == 14 and result.result.curves["val_top5"][0] == 1.0  # 3 classes: top-5 is everything


def test_early_stopping_and_the_best_epoch_ignore_the_test_split(images, tmp_path):
    config = ScratchConfig(size=16, train=replace(FAST, epochs=4))
    first = train_scratch(images, config, tmp_path / "d.pt").result
    x_test, y_test = images.splits["test"]
    tampered = replace(images, splits={**images.splits, "test": (x_test, (y_test + 1) % 3)})
    second = train_scratch(tampered, config, tmp_path / "e.pt").result
    assert first.best_epoch == second.best_epoch
    assert first.curves["val_acc"] == second.curves["val_acc"] and first.curves["train_loss"] == second.curves["train_loss"]


def test_every_ladder_step_is_a_stored_run_with_its_curves(images, tmp_path):
    steps = ladder(ScratchConfig(size=16, train=replace(FAST, epochs=1)))[:2]
    outcomes = run_scratch(images, steps, "ladder", tmp_path / "cache", compute=Compute(device="cpu", precision="bf16"))
    runs = ResultsStore(tmp_path / "cache" / "results.sqlite").runs(method="scratch")
    assert [r.config["step"] for r in runs] == ["baseline", "+normalize"] == [o.step for o in outcomes]
    for run, outcome in zip(runs, outcomes):
        assert set(run.curves) >= {"train_loss", "train_acc", "train_top5", "val_loss", "val_acc", "val_top5"}
        assert run.backbone == "base" and run.weights == "scratch"
        assert run.test_accuracy == outcome.trained.result.test_accuracy
        assert (run.precision, run.timings["train_device"]) == ("bf16", "cpu")


def test_the_training_precision_is_part_of_a_from_scratch_run_key(images):
    config = ScratchConfig(size=16, train=FAST)
    assert scratch_key(images.fingerprint, config, "bf16") != scratch_key(images.fingerprint, config, "fp32")


def test_cifar10_without_a_copy_or_internet_is_a_clear_message(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="TRANSFER_CIFAR10"):
        scratch.load_cifar10(tmp_path / "cifar")


def test_summary_command_prints_the_totals():
    from typer.testing import CliRunner

    from transfer.cli.main import app

    result = CliRunner().invoke(app, ["summary", "--arch", "base"])
    assert result.exit_code == 0 and "1,191,170" in result.output and "23,152,400" in result.output


def test_a_grid_trains_every_setting_and_marks_the_validation_choice(tmp_path):
    from typer.testing import CliRunner

    from transfer.cli.main import app

    data = make_dataset(tmp_path / "data", train=10, test=4)
    result = CliRunner().invoke(app, ["scratch", "--data", str(data), "--arch", "deep", "--size", "16", "--epochs", "1",
                                      "--grid", "lr=0.01,0.1,batch=8", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "lr=0.01 batch=8" in result.output and "lr=0.1 batch=8" in result.output
    assert "chosen by validation accuracy" in result.output
    runs = ResultsStore(tmp_path / "cache" / "results.sqlite").runs(method="scratch")
    assert [r.config["train"]["lr"] for r in runs] == [0.01, 0.1] and {r.config["series"] for r in runs} == {"grid"}
