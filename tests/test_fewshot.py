"""Few-shot curves: subsets drawn per class and nested, settings chosen inside each subset only, every subset
a stored row that a second run reads back, the study's stages and the report's curves."""

import csv

import numpy as np
import pytest

from transfer.classifiers.fewshot import check_shots, subset_rows, subset_search
from transfer.classifiers.settings import FIXED_C, FIXED_KNN, GridConfig, KnnGrid, subset_grid
from transfer.classifiers.svm import cv_folds
from transfer.core.choices import Folds, Norm, Probe
from transfer.core.errors import UserError
from transfer.study.plan import Overrides, open_dataset, plan_stages, run_stages
from transfer.study.schema import load_study

from .conftest import make_dataset


def _blobs(per_class: int, seed: int, classes: int = 3, dims: int = 12):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    return rng.normal(size=(len(labels), dims)) + 2.5 * np.eye(classes, dims)[labels], labels


def test_a_seeds_subsets_hold_shots_images_of_each_class_and_are_nested():
    labels = np.repeat(np.arange(3), 10)
    two, five = subset_rows(labels, 2, seed=4), subset_rows(labels, 5, seed=4)
    assert np.bincount(labels[two]).tolist() == [2, 2, 2]
    assert np.bincount(labels[five]).tolist() == [5, 5, 5]
    assert set(two) <= set(five)
    assert set(subset_rows(labels, 5, seed=5)) != set(five)


def test_the_cv_inside_a_subset_is_k_fold_then_leave_one_out_then_the_fixed_settings():
    grid, knn = GridConfig(cv=5), KnnGrid()
    assert subset_grid(grid, knn, 5)[0].folds == Folds.KFOLD
    assert subset_grid(grid, knn, 4)[0].folds == Folds.LEAVE_ONE_OUT
    fixed, fixed_knn = subset_grid(grid, knn, 1)
    assert (fixed.folds, fixed.c_grid, fixed_knn) == (Folds.NONE, (FIXED_C,), FIXED_KNN)
    folds = cv_folds(GridConfig(folds=Folds.LEAVE_ONE_OUT), np.repeat(np.arange(3), 2))
    assert sorted(int(held[0]) for _, held in folds) == list(range(6))
    assert all(len(held) == 1 and held[0] not in fit and len(fit) == 5 for fit, held in folds)


@pytest.mark.parametrize("probe", [Probe.SVM, Probe.LOGREG, Probe.KNN])
@pytest.mark.parametrize("shots", [1, 3, 6])
def test_the_test_split_never_influences_a_subsets_choice(probe, shots):
    (x, y), (x_test, y_test) = _blobs(10, 0), _blobs(8, 1)
    rows = subset_rows(y, shots, seed=0)
    search = (probe, (Norm.L2,), KnnGrid(k_grid=(1, 3)), GridConfig(c_grid=(0.01, 1.0), cv=5, jobs=1),
              (x[rows], y[rows]))
    honest, config = subset_search(*search, (x_test, y_test), shots, 3)
    tampered, _ = subset_search(*search, (x_test, np.roll(y_test, 5)), shots, 3)
    assert tampered.chosen == honest.chosen
    np.testing.assert_array_equal(tampered.cv_mean, honest.cv_mean)  # NaN (no CV) equals NaN here
    assert config.folds == {1: Folds.NONE, 3: Folds.LEAVE_ONE_OUT, 6: Folds.KFOLD}[shots]
    assert honest.test_accuracy > 0.6


def test_more_shots_than_a_class_has_names_the_class_and_its_count():
    with pytest.raises(UserError, match="--shots 4: class 'beta' has only 3 training images; ask for at most 3"):
        check_shots(np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]), 4, ["alpha", "beta", "gamma"])


STUDY = """\
[study]
name = "shots"

[data]
path = "{data}"

[[features]]
backbone = "efficientnet_lite0"
weights = "random"
layers = ["avgpool"]
image_size = 32
precision = "fp32"

[svm]
cv = 3
probes = ["svm", "knn"]

[fewshot]
shots = [1, 2, 3]
seeds = 2
cv = 3
probes = ["svm", "knn"]

[report]
name = "shots"
"""


def test_a_studys_curves_are_stored_per_subset_read_back_and_drawn(tmp_path, cache_dir):
    data = make_dataset(tmp_path / "data", train=6, test=3)
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(data=data))
    study = load_study(path)

    def run() -> dict[str, str]:
        stages = plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides(), tmp_path / "reports")
        return {report.stage.name: report.status for report in run_stages(stages)}

    first = run()
    assert first == {name: "ran" for name in [
        "extract efficientnet_lite0·32px (random weights)", "svm efficientnet_lite0·32px/avgpool",
        "knn efficientnet_lite0·32px/avgpool", "fewshot svm efficientnet_lite0·32px/avgpool",
        "fewshot knn efficientnet_lite0·32px/avgpool", "report"]}
    assert set(run().values()) == {"cached"}
    report = tmp_path / "reports" / "shots"
    with open(report / "results.csv") as f:
        rows = list(csv.DictReader(f))
    subsets = [row for row in rows if row["method"] == "fewshot"]
    assert len(subsets) == 2 * 3 * 2  # probes × shot counts × seeds, each with its interval
    assert all(row["test 95% CI"] for row in subsets)
    assert {row["data"] for row in subsets} == {"data, 1 train/class", "data, 2 train/class", "data, 3 train/class"}
    assert (report / "fewshot.png").stat().st_size > 0
    assert "## Few-shot curves" in (report / "report.md").read_text()
