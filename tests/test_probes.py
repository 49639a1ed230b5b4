"""The probes beside the SVM: k-NN's vote, logistic regression in the rows' span, the search's honesty."""

import numpy as np

from transfer.classifiers.probes import KnnSetting, knn_votes, logistic_regression, search_of
from transfer.classifiers.settings import GridConfig, KnnGrid
from transfer.classifiers.svm import grid_search
from transfer.core.choices import Norm, Probe


def _blobs(rows: int, columns: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 3
    return rng.normal(size=(rows, columns)) + 3 * np.eye(3, columns)[labels], labels


def test_knn_votes_weigh_each_neighbour_by_exp_similarity_over_t():
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    query = np.array([[0.8, 0.6]], dtype=np.float32)
    (votes,) = knn_votes(rows, np.array([0, 1, 1]), query, [KnnSetting(2, 0.5)], 2)
    np.testing.assert_allclose(votes[0], [np.exp(0.8 / 0.5), np.exp(0.96 / 0.5)], rtol=1e-5)  # the third row and the first


def test_logistic_regression_in_the_span_gives_the_direct_fits_predictions():
    (x, y), (x_test, y_test) = _blobs(60, 200, 0), _blobs(90, 200, 1)
    config = GridConfig(c_grid=(0.1, 10.0), cv=3)
    spanned = grid_search(logistic_regression(Norm.L2), (x, y), (x_test, y_test), config, 3, in_span=True)
    direct = grid_search(logistic_regression(Norm.L2), (x, y), (x_test, y_test), config, 3, in_span=False)
    np.testing.assert_allclose(spanned.cv_mean, direct.cv_mean)
    np.testing.assert_allclose(spanned.model.decision_function(x_test), direct.model.decision_function(x_test), atol=1e-3)


def test_knn_chooses_k_and_t_on_training_folds_and_clips_a_k_above_the_rows(capsys):
    (x, y), (x_test, y_test) = _blobs(30, 8, 0), _blobs(60, 8, 1)
    _, result, _ = search_of(Probe.KNN, (Norm.L2,), KnnGrid(k_grid=(1, 5, 500)), 3).grid((x, y), (x_test, y_test),
                                                                                         GridConfig(cv=3), 3)
    assert [s.k for s in result.grid[::3]] == [1, 5, 20]  # 500 clipped to the 20 rows of a fold's fit
    assert "k=500 is more than the 20 training rows" in capsys.readouterr().err
    assert result.chosen == result.grid[int(np.argmax(result.cv_mean))]
    assert result.test_accuracy > 0.8
