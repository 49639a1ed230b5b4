import numpy as np
import pytest
import torch

from transfer.classifiers.heads import HeadSpec, train_head
from transfer.classifiers.training import TrainConfig, validation_split
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_head
from transfer.runs.predict import predict
from transfer.runs.store import ResultsStore


def _blobs(n_per_class, classes=3, dims=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (classes, dims))
    x = np.concatenate([centres[c] + rng.normal(0, 1, (n_per_class, dims)) for c in range(classes)]).astype(np.float32)
    return x, np.repeat(np.arange(classes), n_per_class)


def test_head_names_follow_the_class_count_and_pick_their_input_layer():
    assert HeadSpec.parse("fc", 15).name == "fc15"
    assert HeadSpec.parse("fc15", 15).input_layer("vgg16") == "relu7"
    mlp = HeadSpec.parse("mlp:1024,1024", 15, dropout=0.3)
    assert mlp.hidden == (1024, 1024) and mlp.input_layer("vgg16") == "pool5"
    assert HeadSpec.parse("fc", 3).input_layer("efficientnet_lite0") == "avgpool"
    layers = [type(m).__name__ for m in mlp.build(25088, 15)]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    with pytest.raises(UserError, match="the head is fc15"):
        HeadSpec.parse("fc10", 15)
    with pytest.raises(UserError, match="unknown head"):
        HeadSpec.parse("svm", 15)


def test_early_stopping_and_best_epoch_use_the_validation_part_only(tmp_path):
    train = _blobs(20)
    x_test, y_test = _blobs(10, seed=1)
    config = TrainConfig(epochs=12, patience=3, lr=0.05, batch_size=16)
    honest = train_head(HeadSpec(name="fc3"), train, (x_test, y_test), 3, config, tmp_path / "a.pt")
    tampered = train_head(HeadSpec(name="fc3"), train, (x_test, (y_test + 1) % 3), 3, config, tmp_path / "b.pt")
    assert honest.best_epoch == tampered.best_epoch
    assert honest.curves["val_acc"] == tampered.curves["val_acc"]
    assert honest.best_val_accuracy == max(honest.curves["val_acc"])
    fit, val = validation_split(train[1], 0.2, 0)
    assert len(val) == 12 and np.bincount(train[1][val]).tolist() == [4, 4, 4] and not set(fit) & set(val)
    # Validation accuracy is 100% from epoch 1 on these blobs: no better epoch comes, so it stops after patience.
    assert honest.stopped_early
    assert len(honest.curves["val_acc"]) - honest.best_epoch == config.patience


def test_an_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    train, test = _blobs(20), _blobs(10, seed=1)
    config = TrainConfig(epochs=6, patience=100, batch_size=16)
    reference = train_head(HeadSpec(name="fc3"), train, test, 3, config, tmp_path / "ref.pt")

    def stop_after_three(epoch, curves):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_head(HeadSpec(name="fc3"), train, test, 3, config, tmp_path / "run.pt", progress=stop_after_three)
    resumed = train_head(HeadSpec(name="fc3"), train, test, 3, config, tmp_path / "run.pt")
    assert resumed.resumed_at == 3
    assert resumed.curves["val_loss"] == pytest.approx(reference.curves["val_loss"])
    for a, b in zip(resumed.head.state_dict().values(), reference.head.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert resumed.test_accuracy == reference.test_accuracy


def test_finetune_from_the_cache_records_a_run_and_predicts(small_data, cache_dir):
    dataset = load_dataset(small_data)
    features = FeatureSpec(weights="random", image_size=32, precision="fp32")
    options = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
    outcome = run_head(dataset, features, "mlp:32", TrainConfig(epochs=3, val_fraction=0.25, batch_size=4), cache_dir, options)
    assert outcome.layer == "pool5"
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="head")[0]
    assert run.config["head"] == "mlp:32" and len(run.curves["train_loss"]) == 3 and run.chosen.startswith("epoch ")
    predictions = predict(outcome.model_path, [small_data / "test"], top=3, device="cpu")
    assert len(predictions) == 9
    assert all(sum(p.scores) == pytest.approx(1, abs=1e-5) and sorted(p.classes) == dataset.classes for p in predictions)


def test_unfreeze_trains_only_the_named_groups_and_the_head():
    from transfer.classifiers.heads import attach_head, unfreeze
    from transfer.features.backbones import Weights, build_model
    from transfer.features.registry import get_backbone

    model = build_model(get_backbone("vgg16"), Weights("random"))
    head = attach_head(model, "vgg16", HeadSpec.parse("fc", 3), 3)
    trainable = unfreeze(model, head, "vgg16", "fc6,fc7")
    assert trainable == ["classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias",
                         "classifier.6.0.weight", "classifier.6.0.bias"]
    conv5 = unfreeze(model, head, "vgg16", "conv5")
    assert [n for n in conv5 if n.startswith("features.")] == [f"features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")]
    assert sum(p.requires_grad for p in model.parameters()) == len(conv5)
    with pytest.raises(UserError, match="choose one of: fc6,fc7, conv5, all"):
        unfreeze(model, head, "vgg16", "conv4")


def test_end_to_end_training_from_images_resumes_and_predicts(small_data, cache_dir):
    from transfer.classifiers.heads import EndToEnd

    dataset = load_dataset(small_data)
    # Lite0, not VGG16: the same training code, a fraction of the parameters to update (fc6,fc7's
    # groups are checked on VGG16 itself in test_unfreeze_trains_only_the_named_groups_and_the_head)
    features = FeatureSpec(backbone="efficientnet_lite0", weights="random", image_size=32, precision="fp32")
    options = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
    config = TrainConfig(epochs=2, val_fraction=0.25, batch_size=4)
    outcome = run_head(dataset, features, "fc", config, cache_dir, options, end_to_end=EndToEnd(unfreeze="all", backbone_lr_scale=0.1, workers=0))
    assert len(outcome.result.curves["train_loss"]) == 2 and outcome.result.best_epoch in (1, 2)
    again = run_head(dataset, features, "fc", config, cache_dir, options, end_to_end=EndToEnd(unfreeze="all", backbone_lr_scale=0.1, workers=0))
    assert again.result.resumed_at == 2 and again.result.test_accuracy == outcome.result.test_accuracy
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="head")[-1]
    assert run.config["unfreeze"] == "all" and run.layer == "unfreeze all"
    predictions = predict(outcome.model_path, [small_data / "test"], top=3, device="cpu")
    assert len(predictions) == 9 and all(sum(p.scores) == pytest.approx(1, abs=1e-5) for p in predictions)


def test_several_settings_are_chosen_on_the_validation_part(small_data, cache_dir):
    dataset = load_dataset(small_data)
    features = FeatureSpec(weights="random", image_size=32, precision="fp32")
    options = RunOptions(device="cpu", batch_size=8, workers=0, progress=False)
    configs = [TrainConfig(optimizer=o, lr=lr, epochs=3, val_fraction=0.25, batch_size=4)
               for o, lr in (("sgd", 0.01), ("adam", 0.001))]
    outcome = run_head(dataset, features, "fc", configs, cache_dir, options)
    tried = outcome.candidates
    assert [(t["optimizer"], t["lr"]) for t in tried] == [("sgd", 0.01), ("adam", 0.001)]
    best = max(tried, key=lambda t: t["val_accuracy"])
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="head")[-1]
    assert (run.config["train"]["optimizer"], run.config["train"]["lr"]) == (best["optimizer"], best["lr"])
    assert run.cv_best == best["val_accuracy"] and not np.isnan(run.test_accuracy)
    assert run.timings["train_device"] == "cpu"
    from transfer.reports.report import configuration_rows, header_lines

    assert "heads and networks trained on cpu" in " ".join(header_lines(configuration_rows([run])))
    with pytest.raises(UserError, match="one setting at a time"):
        from transfer.classifiers.heads import EndToEnd

        run_head(dataset, features, "fc", configs, cache_dir, options, end_to_end=EndToEnd())


def test_running_scores_of_batches_equal_the_scores_of_all_their_logits():
    import torch
    from torch.nn import functional as F

    from transfer.classifiers.training import RunningScores, Scores

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 7, generator=generator)
    labels = torch.randint(0, 7, (20,), generator=generator)
    labels[3] = -1  # an unreadable image: left out, as `Scores.of` leaves it out
    running = RunningScores()
    for start in (0, 8, 16):
        batch, batch_labels = logits[start:start + 8], labels[start:start + 8]
        running.add(batch, batch_labels, F.cross_entropy(batch, batch_labels, ignore_index=-1))
    whole, summed = Scores.of(logits, labels), running.scores()
    assert (summed.accuracy, summed.top5) == pytest.approx((whole.accuracy, whole.top5))
    assert summed.loss == pytest.approx(whole.loss, rel=1e-5)
