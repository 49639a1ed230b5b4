"""`transfer.LinearProbe`: a scikit-learn classifier by scikit-learn's own checks, inside its tools."""

import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from transfer.classifiers.estimator import LinearProbe
from transfer.core.choices import Folds


def _known_failures(estimator) -> dict[str, str]:
    """The one check the class means fail, as scikit-learn's own NearestCentroid does on these rows."""
    if estimator.probe != "ncm":
        return {}
    return {"check_fit2d_1feature": "one feature, L2-normalised, is the same value in every row: NearestCentroid "
                                    "refuses rows without variance ('All features have zero variance')"}


@parametrize_with_checks([LinearProbe(probe=probe, c_grid=(0.1, 1.0, 10.0), cv=3) for probe in ("svm", "logreg", "knn", "ncm")],
                         expected_failed_checks=_known_failures)
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def _blobs(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array(["coast", "forest", "street"]), per_class)
    centres = {"coast": 0, "forest": 1, "street": 2}
    return rng.normal(size=(len(labels), 16)) + 3 * np.eye(3, 16)[[centres[n] for n in labels]], labels


def test_it_chooses_its_setting_by_cv_inside_fit_and_drops_into_a_pipeline():
    (x, y), (x_test, y_test) = _blobs(20, 0), _blobs(10, 1)
    probe = LinearProbe(probe="logreg", c_grid=(0.01, 1.0, 100.0)).fit(x, y)
    assert probe.folds_ == Folds.KFOLD
    assert probe.chosen_ == probe.cv_results_["setting"][int(np.argmax(probe.cv_results_["mean_cv_accuracy"]))]
    assert probe.score(x_test, y_test) > 0.9
    scores = cross_val_score(make_pipeline(FunctionTransformer(np.abs), LinearProbe(probe="knn", k_grid=(1, 5))), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.5
    assert LinearProbe().fit(x[::20], y[::20]).folds_ == Folds.NONE  # one row per class: the fixed settings


def test_rows_of_another_width_get_scikit_learns_own_error():
    x, y = _blobs(10, 0)
    probe = LinearProbe().fit(x, y)
    with pytest.raises(ValueError, match="X has 15 features, but LinearProbe is expecting 16 features as input"):
        probe.predict(x[:, :15])
    with pytest.raises(ValueError, match="probe 'tree' is not one of"):
        LinearProbe(probe="tree").fit(x, y)
