import csv
import dataclasses
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.core.errors import UserError
from transfer.descriptors.settings import BowConfig
from transfer.reports.report import FIGURES, HEADERS, configuration_rows, table_cells, write_report
from transfer.runs.store import ResultsStore, RunRecord

CLASSES = ["alpha", "beta", "gamma"]


def _svm(layer, accuracies, cv, chosen, **extra):
    return RunRecord(
        method="svm", dataset="/data/scenes", dataset_fingerprint="f1", config={"norm": "l2"},
        test_accuracy=accuracies[[0.01, 0.1, 1.0].index(chosen)], classes=CLASSES, backbone="vgg16",
        weights="random:seed0", pooling="max", layer=layer, precision="bf16", c_grid=[0.01, 0.1, 1.0],
        cv_accuracy=cv, test_accuracy_per_c=accuracies, chosen=chosen, cv_best=max(cv),
        per_class_accuracy=[0.9, 0.8, 0.7], confusion=[[9, 1, 0], [1, 8, 1], [0, 3, 7]],
        timings={"fit_seconds": 2.5, "extract_seconds": 100.0, "extract_images_per_s": 9.0}, **extra,
    )


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "cache" / "results.sqlite")
    store.add(_svm("relu7", [0.70, 0.80, 0.75], [0.71, 0.79, 0.76], 0.1))
    store.add(_svm("relu7", [0.71, 0.82, 0.77], [0.72, 0.81, 0.78], 0.1))  # a re-run replaces the earlier row
    store.add(_svm("pool5", [0.60, 0.65, 0.66], [0.61, 0.64, 0.67], 1.0))
    store.add(RunRecord(method="bow", dataset="/data/scenes", dataset_fingerprint="f1", config=dataclasses.asdict(BowConfig(pyramid=2)),
                        test_accuracy=0.77, test_std=0.01, splits=10, classes=CLASSES, layer="sift-L2",
                        c_grid=[1.0], cv_accuracy=[0.76], test_accuracy_per_c=[0.77], chosen=1.0, cv_best=0.76,
                        timings={"descriptors": 100.0, "vocabulary": 10.0, "encoding": 40.0, "histograms": 5.0, "fit_seconds": 60.0}))
    store.add(RunRecord(method="head", dataset="/data/scenes", dataset_fingerprint="f1", config={"head": "fc3", "train": {"optimizer": "sgd", "lr": 0.01, "epochs": 30, "patience": 8}},
                        test_accuracy=0.79, classes=CLASSES, backbone="vgg16", weights="random:seed0", chosen="epoch 3", cv_best=0.8,
                        curves={"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
                                "train_acc": [0.5, 0.7, 0.8], "val_acc": [0.45, 0.65, 0.8]}))
    store.add(RunRecord(method="scratch", dataset="/data/scenes", dataset_fingerprint="f1",
                        config={"series": "ladder", "step": "+normalize", "train": {"lr": 0.01}}, test_accuracy=0.41,
                        classes=CLASSES, backbone="base", weights="scratch", layer="32px", chosen="epoch 2", cv_best=0.45,
                        curves={"train_loss": [1.0, 0.9], "val_loss": [1.1, 1.0], "train_acc": [0.4, 0.5], "val_acc": [0.4, 0.45]}))
    return store


def test_rows_are_the_latest_run_per_configuration_with_the_store_numbers(store):
    rows = configuration_rows(store.runs())
    assert [r.label for r in rows] == [
        "vgg16 (random weights) relu7 SVM", "vgg16 (random weights) pool5 SVM",
        "BoW + pyramid L2 (step 4, sizes 2.7/4.5, 1000 words), 10 splits", "vgg16 (random weights) fc3 head (sgd, lr 0.01, ≤30 epochs, patience 8)",
        "from scratch: base 32px ladder +normalize"]
    relu7 = rows[0]
    assert relu7.run.id == 2 and relu7.best
    cells = dict(zip(HEADERS, table_cells(relu7)))
    assert cells["test %"] == "82.00" and cells["CV %"] == "81.00" and cells["val %"] == "" and cells["chosen"] == "C=0.1"
    assert cells["extract s"] == "100.0" and cells["fit s"] == "2.5" and cells["configuration"].startswith("★")
    bow = dict(zip(HEADERS, table_cells(rows[2])))
    assert bow["test %"] == "77.00 ± 1.00" and bow["splits"] == "10" and bow["extract s"] == "155.0"
    assert [r.label for r in configuration_rows(store.runs(), best_only=True)] == ["vgg16 (random weights) relu7 SVM"]


def test_report_files_and_figures_are_written(store, tmp_path):
    files = write_report(store.runs(), tmp_path / "reports" / "study")
    drawn = set(FIGURES) - {"fewshot"}  # no few-shot runs here: tests/test_fewshot.py draws their curves
    assert set(files.figures) == drawn
    for path in [files.markdown, files.html, files.csv, *files.figures.values()]:
        assert path.exists() and path.stat().st_size > 0
    with open(files.csv) as f:
        table = list(csv.DictReader(f))
    assert [row["test %"] for row in table] == ["82.00", "66.00", "77.00 ± 1.00", "79.00", "41.00"]
    page = files.html.read_text()
    assert page.count("data:image/png;base64,") == len(drawn)
    assert not re.search(r"src=['\"](?!data:)", page)  # self-contained: no external file or address
    assert "Data: /data/scenes, fingerprint f1: 3 classes" in page
    assert "81.4%" not in page  # 15-Scene's published figures belong to 15-Scene only
    assert "| ★ vgg16 (random weights) relu7 SVM |" in files.markdown.read_text()


def test_figures_without_data_are_left_out_and_said_so(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    store.add(_svm("relu7", [0.7, 0.8, 0.75], [0.7, 0.8, 0.75], 0.1))
    files = write_report(store.runs(), tmp_path / "out")
    assert "training_curves" not in files.figures and "scratch_vs_transfer" not in files.figures
    assert ("Not drawn (no such runs in the store yet): From scratch vs transfer on the same data; Training curves"
            in files.markdown.read_text())


def test_empty_store_and_unmatched_filters_give_messages(tmp_path, store):
    with pytest.raises(UserError, match="no runs to report"):
        write_report([], tmp_path / "out")
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "report", "--cache-dir", str(tmp_path / "none")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no results store" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "report", "--backbone", "resnet",
                             "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert result.returncode == 2 and "no runs match" in result.stderr


def test_report_command_prints_the_table(store, tmp_path):
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "82.00" in result.output
    assert "Data: /data/scenes" in result.output
    assert "(published)" not in result.output
    assert (out / "report.html").exists()


def test_the_headline_is_chosen_on_training_data_and_every_accuracy_has_its_interval(store, tmp_path):
    store.add(_svm("fc6", [0.99, 0.99, 0.99], [0.50, 0.55, 0.60], 1.0))  # the best test accuracy, the worst CV
    rows = configuration_rows(store.runs())
    assert [r.label for r in rows if r.best] == ["vgg16 (random weights) relu7 SVM"]
    relu7 = dict(zip(HEADERS, table_cells(next(r for r in rows if r.best))))
    # 24 of 30 test images right: Wilson 95% interval by hand, (p + z²/2n ± z·√(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    assert relu7["test 95% CI"] == "62.7–90.5"
    assert relu7["class mean %"] == "80.00"
    files = write_report(store.runs(), tmp_path / "report", published=False)
    with open(files.csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert not any("★" in value for line in table for value in line.values())
    assert [line["configuration"] for line in table if line["headline"] == "1"] == ["vgg16 (random weights) relu7 SVM"]


def test_a_cross_validated_score_comes_before_a_higher_hold_out_score(store):
    head = next(run for run in store.runs() if run.method == "head")
    store.add(dataclasses.replace(head, id=None, cv_best=0.95, config={**head.config, "dropout": 0.2}))  # best epoch on a hold-out
    rows = configuration_rows(store.runs())
    assert [r.label for r in rows if r.best] == ["vgg16 (random weights) relu7 SVM"]  # CV 81% beats a 95% hold-out
    held_out = dict(zip(HEADERS, table_cells(rows[-1])))
    assert (held_out["CV %"], held_out["val %"]) == ("", "95.00")
    heads_only = [run for run in store.runs() if run.method in ("head", "scratch")]
    assert [r.run.cv_best for r in configuration_rows(heads_only) if r.best] == [0.95]


def test_the_class_mean_leaves_out_classes_without_test_images():
    from transfer.reports.report import Row

    run = RunRecord(method="svm", dataset="d", dataset_fingerprint="f", config={}, test_accuracy=0.75, classes=CLASSES,
                    per_class_accuracy=[1.0, 0.5, 0.0], confusion=[[5, 0, 0], [1, 1, 0], [0, 0, 0]])
    assert Row(run, "x").class_mean_accuracy == 0.75  # (1.0 + 0.5) / 2: gamma has no test image
    assert Row(run, "x").test_images == 7


def test_differences_from_the_headline_are_tested_on_the_same_test_images(store):
    store.add(_svm("fc6", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 0.1))
    runs = store.runs()
    for run in runs:
        if run.layer == "relu7":
            run.config["test_correct"] = "1111111111"
        elif run.layer == "fc6":
            run.config["test_correct"] = "1111100000"  # 5 images only the headline gets right, none the other way
        elif run.layer == "pool5":
            run.config["test_correct"] = "111"  # another test set: not comparable
    rows = {row.run.layer: row for row in configuration_rows(runs)}
    cells = {layer: dict(zip(HEADERS, table_cells(row))) for layer, row in rows.items()}
    assert cells["relu7"]["vs ★ p"] == "—"
    assert rows["fc6"].vs_headline == 0.0625  # exact: 2 · 0.5⁵
    assert cells["fc6"]["vs ★ p"] == "0.062"
    assert cells["pool5"]["vs ★ p"] == ""
    assert cells["pool5"]["chosen"] == "C=1 (grid edge)"
    assert cells["relu7"]["chosen"] == "C=0.1"


def test_published_figures_appear_only_beside_15_scene_with_their_source(tmp_path):
    from transfer.reports.report import published_lines, published_withheld

    scenes = ["bedroom", "CALsuburb", "industrial", "kitchen", "livingroom", "MITcoast", "MITforest", "MIThighway",
              "MITinsidecity", "MITmountain", "MITopencountry", "MITstreet", "MITtallbuilding", "PARoffice", "store"]
    run = RunRecord(method="svm", dataset="/data/15scene", dataset_fingerprint="f", config={"train_per_class": [100, 100]},
                    test_accuracy=0.9, classes=scenes, backbone="efficientnet_lite0", weights="imagenet:efficientnet_lite0",
                    pooling="max", layer="avgpool", cv_best=0.9)
    rows = configuration_rows([run])
    assert any("81.4%" in line and "Lazebnik" in line and "10 random splits" in line for line in published_lines(rows))
    assert dict(zip(HEADERS, table_cells(rows[0])))["pooling"] == ""  # Lite0 has no pooling variants
    assert dict(zip(HEADERS, table_cells(rows[0])))["data"] == "15scene, 100 train/class"
    # A quick study's 10 per class beside it: each row says its data, and the 100-per-class figures go.
    quick = RunRecord(method="svm", dataset="/data/15scene", dataset_fingerprint="q", config={"train_per_class": [10, 10]},
                      test_accuracy=0.6, classes=scenes, backbone="efficientnet_lite0", weights="imagenet:efficientnet_lite0",
                      pooling="max", layer="avgpool",
                      cv_best=0.6)
    both = configuration_rows([run, quick])
    assert [row.label for row in both] == ["efficientnet_lite0 avgpool SVM · 15scene, 100 train/class",
                                           "efficientnet_lite0 avgpool SVM · 15scene, 10 train/class"]
    assert published_lines(both) == []
    assert "100 training images per class" in published_withheld(both)
    assert published_withheld(rows) is None
    page = write_report([run, quick], tmp_path / "mixed")
    assert "Lazebnik" not in page.markdown.read_text() and "not shown" in page.html.read_text()
    other = RunRecord(method="svm", dataset="/data/mine", dataset_fingerprint="g", config={}, test_accuracy=0.9,
                      classes=CLASSES, cv_best=0.9)
    assert published_lines(configuration_rows([other])) == []


def test_on_unbalanced_data_the_class_mean_and_the_test_cap_match_a_hand_count(tmp_path):
    import numpy as np

    from transfer.classifiers.settings import GridConfig
    from transfer.data.datasets import SplitPolicy, load_dataset
    from transfer.features.cache import read_features
    from transfer.features.extract import extract
    from transfer.features.spec import FeatureSpec, RunOptions
    from transfer.reports.report import Row
    from transfer.runs.jobs import run_svm
    from transfer.runs.models import load_model

    from .conftest import make_pooled

    root = make_pooled(tmp_path / "unbalanced", classes=("a", "b", "c"), per_class=14)
    for name, keep in (("a", 5), ("b", 9)):  # a: 5 images, b: 9, c: 14
        for index in range(keep, 14):
            (root / name / f"{index}.png").unlink()
    dataset = load_dataset(root, SplitPolicy(train_per_class=3, test_per_class=6))
    assert [sum(s.label == c for s in dataset.samples("test")) for c in range(3)] == [2, 6, 6]  # min(6, n - 3)
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    extraction = extract(dataset, spec, tmp_path / "cache", RunOptions(device="cpu", workers=0, progress=False))
    (outcome,) = run_svm(dataset, spec, tmp_path / "cache", GridConfig(c_grid=(1.0,), cv=3, jobs=1))
    test = read_features(extraction.path, "relu7", dataset).splits["test"]
    predicted = load_model(outcome.model_path).model.predict(test.features)
    by_hand = np.mean([np.mean(predicted[test.labels == c] == c) for c in range(3)])
    run = ResultsStore(tmp_path / "cache" / "results.sqlite").runs()[0]
    assert Row(run, "x").class_mean_accuracy == pytest.approx(by_hand)
    assert run.test_accuracy == pytest.approx(np.mean(predicted == test.labels))


def test_a_bow_rows_feature_seconds_include_its_kernel_values(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    store.add(RunRecord(method="bow", dataset="/data/scenes", dataset_fingerprint="f1",
                        config=dataclasses.asdict(BowConfig(pyramid=2, kernel="intersection")),
                        test_accuracy=0.78, classes=CLASSES, layer="sift-L2", c_grid=[1.0], cv_accuracy=[0.76],
                        test_accuracy_per_c=[0.78], chosen=1.0, cv_best=0.76,
                        timings={"vocabulary": 10.0, "encoding": 40.0, "histograms": 5.0, "kernel_map": 30.0, "fit_seconds": 9.0}))
    (row,) = configuration_rows(store.runs())
    assert row.extract_seconds == 85.0
    assert row.classifier == "intersection-kernel SVM"
