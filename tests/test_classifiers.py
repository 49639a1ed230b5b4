import numpy as np
import pytest

from transfer.classifiers.settings import GridConfig, parse_c_grid
from transfer.classifiers.svm import grid_search, linear_svm, plain_svm, redraw_splits, span_fit
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_svm
from transfer.runs.store import ResultsStore


def _blobs(n_per_class=20, classes=3, dims=10, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dims))
    x = np.concatenate([centres[c] + spread * rng.normal(0, 1, (n_per_class, dims)) for c in range(classes)])
    return x, np.repeat(np.arange(classes), n_per_class)


def test_the_test_split_never_influences_the_chosen_c():
    train = _blobs(seed=0)
    x_test, y_test = _blobs(seed=1)
    config = GridConfig(c_grid=(0.001, 0.01, 0.1, 1, 10), cv=4, jobs=1)
    honest = grid_search(linear_svm("l2"), train, (x_test, y_test), config, 3)
    rng = np.random.default_rng(5)
    for tampered in (rng.permutation(y_test), np.zeros_like(y_test), (y_test + 1) % 3):
        other = grid_search(linear_svm("l2"), train, (x_test, tampered), config, 3)
        assert other.chosen == honest.chosen
        assert other.cv_mean == honest.cv_mean
    assert honest.test_accuracy == honest.test_per_setting[honest.grid.index(honest.chosen)]
    assert honest.chosen == honest.grid[int(np.argmax(honest.cv_mean))]
    assert np.array(honest.confusion).sum() == len(y_test)


def test_each_c_gets_its_own_cv_scores_and_test_accuracy():
    """The fits run largest C first in a pool; each result must still land on its own C."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    train, (x_test, y_test) = _blobs(seed=0, spread=4.0), _blobs(seed=1, spread=4.0)
    config = GridConfig(c_grid=(0.001, 0.1, 10), cv=3, jobs=2)
    result = grid_search(linear_svm("l2"), train, (x_test, y_test), config, 3)
    folds = StratifiedKFold(config.cv, shuffle=True, random_state=config.seed)
    by_hand = [cross_val_score(linear_svm("l2")(c), *train, cv=folds).mean() for c in config.c_grid]
    np.testing.assert_allclose(result.cv_mean, by_hand)
    assert len(set(result.cv_mean)) == 3  # distinct per C: a mix-up would show
    assert result.test_per_setting == [linear_svm("l2")(c).fit(*train).score(x_test, y_test) for c in config.c_grid]


def test_c_grid_and_training_data_errors_are_clear():
    assert GridConfig(c_grid=parse_c_grid("0.1, 0.01,0.1")).c_grid == (0.01, 0.1)
    for bad, message in (("", "empty"), ("0.1,-1", "positive"), ("0,1", "positive"), ("a,b", "comma-separated")):
        with pytest.raises(UserError, match=message):
            GridConfig(c_grid=parse_c_grid(bad))
    x, y = _blobs()
    with pytest.raises(UserError, match="only one class"):
        grid_search(linear_svm(), (x, np.zeros_like(y)), (x, y), GridConfig(cv=3, jobs=1), 3)
    with pytest.raises(UserError, match="lower --cv"):
        grid_search(linear_svm(), (x, y), (x, y), GridConfig(cv=25, jobs=1), 3)
    with pytest.raises(UserError, match="norm 'max' is not one of: l2, power, standard, none"):
        linear_svm("max")


def test_redrawn_splits_are_stratified_and_reproducible():
    labels = np.repeat(np.arange(3), [10, 12, 15])
    splits = redraw_splits(labels, 4, 3, seed=7)
    assert len(splits) == 3
    for train, test in splits:
        assert np.bincount(labels[train]).tolist() == [4, 4, 4]
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    again = redraw_splits(labels, 4, 3, seed=7)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(splits, again))
    assert not np.array_equal(splits[0][0], splits[1][0])


def test_svm_without_cached_features_names_the_extract_command(small_data, cache_dir):
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    with pytest.raises(UserError, match=r"transfer extract --data .* --layer relu7 --cache-dir .* --weights random .*--image-size 32"):
        run_svm(load_dataset(small_data), spec, cache_dir, GridConfig(cv=2, jobs=1))


def test_svm_on_cached_features_records_a_run_and_saves_the_model(small_data, cache_dir):
    from transfer.runs.models import load_model

    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("relu7", "pool5"), image_size=32, precision="fp32")
    extract(dataset, spec, cache_dir, RunOptions(device="cpu", batch_size=8, workers=0, progress=False))
    outcomes = run_svm(dataset, spec, cache_dir, GridConfig(c_grid=(0.1, 10), cv=2, jobs=1, splits=3))
    assert [o.name for o in outcomes] == ["relu7", "pool5"]
    runs = ResultsStore(cache_dir / "results.sqlite").runs(method="svm")
    assert [r.layer for r in runs] == ["relu7", "pool5"]
    run = runs[0]
    assert run.c_grid == [0.1, 10.0] and len(run.cv_accuracy) == 2 and len(run.test_accuracy_per_c) == 2
    assert run.splits == 3 and run.test_std is not None and len(run.config["split_accuracies"]) == 3
    assert run.test_accuracy == pytest.approx(np.mean(run.config["split_accuracies"]))
    assert run.timings["fit_seconds"] > outcomes[0].result.fit_seconds  # the whole stage: the re-drawn splits too
    assert run.weights == "random:seed0" and run.classes == ["alpha", "beta", "gamma"]
    assert run.timings["extract_images"] == 21 and run.timings["extract_images_per_s"] > 0
    assert np.array(run.confusion).shape == (3, 3)
    saved = load_model(run.model_path)
    assert saved.KIND == "svm" and saved.extractions[0].layer_key == "relu7" and saved.classes == run.classes
    assert saved.model.predict(np.zeros((1, 4096))).shape == (1,)




@pytest.mark.parametrize("dims", [200, 25])  # fewer rows than features; more rows in every fit than features
@pytest.mark.parametrize("make_model", [linear_svm("l2"), linear_svm("power"), linear_svm("none"), plain_svm],
                         ids=["l2", "power", "none", "bare"])
def test_the_grid_in_the_training_rows_span_gives_the_same_models(make_model, dims):
    """The fits run in the rows' span, and the models come back on the features. Some training rows
    appear twice (as in the shared 15-Scene): their Gram matrix is singular."""
    x, y = _blobs(n_per_class=22, dims=dims, spread=3.0)
    fit = np.arange(len(y)) % 22 < 12  # 12 training and 10 test rows per class, from the same centres
    twice = np.flatnonzero(fit)[::5]
    train, (x_test, y_test) = (np.concatenate([x[fit], x[twice]]), np.concatenate([y[fit], y[twice]])), (x[~fit], y[~fit])
    config = GridConfig(c_grid=(0.001, 0.01, 0.1, 1), cv=3, jobs=1)
    direct = grid_search(make_model, train, (x_test, y_test), config, 3, in_span=False)
    spanned = grid_search(make_model, train, (x_test, y_test), config, 3)
    assert span_fit(make_model, train[0].shape, fewest_fit_rows=len(train[1]) * 2 // 3) is not None
    assert spanned.chosen == direct.chosen
    np.testing.assert_allclose(spanned.cv_mean, direct.cv_mean)
    np.testing.assert_allclose(spanned.test_per_setting, direct.test_per_setting)
    np.testing.assert_allclose(spanned.model.decision_function(x_test), direct.model.decision_function(x_test),
                               atol=1e-3)
    assert spanned.model.predict(x_test).tolist() == direct.model.predict(x_test).tolist()


def test_triangular_coordinates_keep_every_dot_product_and_map_weights_back():
    from transfer.classifiers.svm import TriangularCoordinates

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 50))
    rows[7] = rows[3]  # a duplicate: rank 29
    others = rng.normal(size=(4, 50))
    coordinates = TriangularCoordinates(rows @ rows.T)
    order, rank = coordinates.order, coordinates.rank
    assert rank == 29 and sorted(order) == list(range(30))
    np.testing.assert_allclose(coordinates.rows @ coordinates.rows.T, (rows @ rows.T)[np.ix_(order, order)], atol=1e-10)
    assert not np.triu(coordinates.rows[:rank], 1).any()  # exact zeros above the diagonal: liblinear skips them
    mapped = coordinates.of_others(rows[order[:rank]] @ others.T)
    np.testing.assert_allclose(mapped @ coordinates.rows.T, others @ rows[order].T, atol=1e-10)
    weights = rng.normal(size=(3, rank))  # 3 classes' weight vectors in the coordinates
    on_features = rows.T @ coordinates.on_rows(weights)
    np.testing.assert_allclose(others @ on_features, mapped @ weights.T, atol=1e-10)
    np.testing.assert_allclose(rows[order] @ on_features, coordinates.rows @ weights.T, atol=1e-10)


def test_a_fold_fitted_scaler_or_folds_with_fewer_rows_than_features_keep_the_direct_fits():
    """60 training rows, 40 in each fold's fit: the span for 200 features (fewer dimensions) and for 30
    (every fit on the features would be liblinear's primal one anyway); not for 50, where sklearn fits
    the folds with its dual solver, nor for 29, where the rows are more than twice the features."""
    assert span_fit(linear_svm("standard"), (60, 200), fewest_fit_rows=40) is None
    assert span_fit(linear_svm("l2"), (60, 50), fewest_fit_rows=40) is None
    assert span_fit(linear_svm("l2"), (60, 29), fewest_fit_rows=40) is None
    assert span_fit(linear_svm("l2"), (60, 200), fewest_fit_rows=40) is not None
    assert span_fit(linear_svm("l2"), (60, 30), fewest_fit_rows=40) is not None


def test_power_normalisation_is_the_signed_square_root_then_l2():
    x = np.array([[4.0, -9.0, 0.0], [1.0, 1.0, -1.0]])
    model = linear_svm("power")(1.0)
    by_hand = np.array([[2.0, -3.0, 0.0], [1.0, 1.0, -1.0]])
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(model[:-1].fit_transform(x), by_hand)


def test_the_normalisation_is_chosen_by_cv_and_recorded(small_data, cache_dir):
    from transfer.classifiers.settings import parse_norms
    from transfer.classifiers.svm import choose_by_cv
    from transfer.runs.models import load_model

    train, test = _blobs(seed=0), _blobs(seed=1)
    config = GridConfig(c_grid=(0.01, 1), cv=3, jobs=1)
    models = {"l2": linear_svm("l2"), "none": linear_svm("none")}
    chosen, result, cv = choose_by_cv(models, train, test, config, 3)
    assert set(cv) == {"l2", "none"} and cv[chosen] == max(cv.values()) == max(result.cv_mean)
    tampered = choose_by_cv(models, train, (test[0], (test[1] + 1) % 3), config, 3)
    assert (tampered[0], tampered[2]) == (chosen, cv)  # the test labels play no part
    assert parse_norms("power, l2,power") == ("power", "l2")
    with pytest.raises(UserError, match="norm 'max' is not one of"):
        parse_norms("l2,max")

    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    extract(dataset, spec, cache_dir, RunOptions(device="cpu", batch_size=8, workers=0, progress=False))
    (outcome,) = run_svm(dataset, spec, cache_dir, GridConfig(c_grid=(0.1, 10), cv=2, jobs=1), parse_norms("l2,power"))
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="svm")[-1]
    assert set(run.config["candidates_cv"]) == {"l2", "power"} == set(outcome.candidates_cv)
    assert run.config["norm"] == outcome.chosen_candidate == max(run.config["candidates_cv"], key=run.config["candidates_cv"].get)
    assert run.cv_best == run.config["candidates_cv"][run.config["norm"]]
    saved = load_model(run.model_path)  # a power model names this package's function: loaded, not refused
    assert saved.model.predict(np.ones((1, 4096))).shape == (1,)


# 60 training rows, 40 per fold's fit: 50 features are fitted directly (processes); 30 and 200 in the span (threads)
@pytest.mark.parametrize("dims", [30, 50, 200])
def test_each_redrawn_split_scores_the_model_choose_by_cv_would_choose(dims):
    from transfer.classifiers.svm import choose_by_cv, split_accuracies

    config = GridConfig(c_grid=(0.001, 0.1, 10), cv=3, jobs=2)
    models = {"none": linear_svm("none"), "power": linear_svm("power")}
    rows, labels, splits, expected = [], [], [], []
    start = 0
    for seed in range(3):
        train, test = _blobs(dims=dims, seed=seed, spread=3.0), _blobs(dims=dims, seed=10 + seed, spread=3.0)
        assert (span_fit(models["power"], train[0].shape, fewest_fit_rows=40) is not None) == (dims != 50)
        _, chosen, _ = choose_by_cv(models, train, test, config, 3)
        expected.append(chosen.test_accuracy)
        rows += [train[0], test[0]]
        labels += [train[1], test[1]]
        middle, end = start + len(train[1]), start + len(train[1]) + len(test[1])
        splits.append((np.arange(start, middle), np.arange(middle, end)))
        start = end
    found = split_accuracies(models, np.concatenate(rows), np.concatenate(labels), splits, config)
    assert found == expected
    assert len(set(expected)) > 1  # the splits differ, so an answer in the wrong order would show
