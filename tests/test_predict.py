import numpy as np
import pytest

from transfer.classifiers.settings import GridConfig
from transfer.classifiers.svm import side_by_side
from transfer.core.archive import load_estimator, save_estimator
from transfer.core.errors import UserError
from transfer.data.datasets import load_dataset
from transfer.descriptors.settings import BowConfig, SiftConfig, VocabularyConfig
from transfer.features.cache import read_features
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions
from transfer.runs.jobs import run_bow, run_svm, run_svm_side_by_side
from transfer.runs.models import load_model, save_payload
from transfer.runs.predict import predict

GRID = GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1)


@pytest.mark.parametrize("views", ["centre", "flip"])
def test_predict_with_a_saved_svm_matches_the_model_on_cached_features(small_data, cache_dir, views):
    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("pool5",), image_size=32, precision="fp32", views=views)
    extraction = extract(dataset, spec, cache_dir, RunOptions(device="cpu", batch_size=4, workers=0, progress=False))
    outcome = run_svm(dataset, spec, cache_dir, GRID)[0]
    (small_data / "test" / "broken.png").write_bytes(b"\x89PNG not really")
    predictions = predict(outcome.model_path, [small_data / "test"], top=3, device="cpu")
    assert len(predictions) == 10
    broken = [p for p in predictions if p.error]
    assert [p.path.endswith("broken.png") for p in broken] == [True]
    good = [p for p in predictions if not p.error]
    assert all(len(p.classes) == 3 and p.scores == sorted(p.scores, reverse=True) for p in good)
    cached = read_features(extraction.path, "pool5", dataset).splits["test"]
    model = load_model(outcome.model_path)
    expected = [model.classes[i] for i in model.model.predict(cached.features)]
    by_path = {p.path.split("test/")[-1]: p.classes[0] for p in good}
    assert [by_path[path.split("test/")[-1]] for path in cached.paths] == expected
    # The scores too: predict computes the features as the extraction did (its views included).
    score = {p.path.split("test/")[-1]: p.scores[0] for p in good}
    best = model.model.decision_function(cached.features).max(axis=1)
    assert [score[path.split("test/")[-1]] for path in cached.paths] == pytest.approx(best.tolist(), rel=1e-4, abs=1e-6)


def test_an_svm_on_layers_side_by_side_predicts_as_it_was_scored(small_data, cache_dir):
    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("pool5", "relu7"), image_size=32, precision="fp32")
    extraction = extract(dataset, spec, cache_dir, RunOptions(device="cpu", batch_size=4, workers=0, progress=False))
    (outcome,) = run_svm(dataset, spec, cache_dir, GRID, combine=True)
    assert outcome.name == "pool5+relu7"
    blocks = [read_features(extraction.path, layer, dataset).splits["test"] for layer in ("pool5", "relu7")]
    assert outcome.result.test_correct is not None
    model = load_model(outcome.model_path)
    features = side_by_side([block.features for block in blocks])
    assert features.shape[1] == 512 * 1 * 1 + 4096  # pool5 of a 32-pixel image is 512 × 1 × 1
    np.testing.assert_allclose(np.linalg.norm(features[:, :512], axis=1), 1.0, rtol=1e-5)
    expected = [model.classes[i] for i in model.model.predict(features)]
    predictions = predict(outcome.model_path, [small_data / "test"], device="cpu")
    by_path = {p.path.split("test/")[-1]: p.classes[0] for p in predictions}
    assert [by_path[path.split("test/")[-1]] for path in blocks[0].paths] == expected


def test_an_svm_on_two_extractions_side_by_side_predicts_as_it_was_scored(small_data, cache_dir):
    dataset = load_dataset(small_data)
    parts = [FeatureSpec(weights="random", layers=("pool5",), image_size=32, precision="fp32"),
             FeatureSpec(weights="random", layers=("pool5",), image_size=64, precision="fp32", views="flip")]
    paths = [extract(dataset, part, cache_dir, RunOptions(device="cpu", batch_size=4, workers=0, progress=False)).path
             for part in parts]
    (small_data / "test" / "broken.png").write_bytes(b"\x89PNG not really")
    outcome = run_svm_side_by_side(dataset, parts, cache_dir, GRID)
    assert outcome.name == "pool5+pool5"
    blocks = [read_features(path, "pool5", dataset).splits["test"] for path in paths]
    assert blocks[0].paths == blocks[1].paths
    features = side_by_side([block.features for block in blocks])
    assert features.shape[1] == 512 + 512 * 2 * 2  # pool5 of a 32-pixel image is 512 × 1 × 1, of a 64-pixel one 512 × 2 × 2
    model = load_model(outcome.model_path)
    assert [part.features["image_size"] for part in model.extractions] == [32, 64]
    expected = [model.classes[i] for i in model.model.predict(features)]
    predictions = predict(outcome.model_path, [small_data / "test"], device="cpu")
    assert [p.path.endswith("broken.png") for p in predictions if p.error] == [True]
    by_path = {p.path.split("test/")[-1]: p.classes[0] for p in predictions if not p.error}
    assert [by_path[path.split("test/")[-1]] for path in blocks[0].paths] == expected


def test_combining_one_extraction_is_a_clear_error(small_data, cache_dir):
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    with pytest.raises(UserError, match="name two or more"):
        run_svm_side_by_side(load_dataset(small_data), [spec], cache_dir, GRID)


def test_combining_one_layer_is_a_clear_error(small_data, cache_dir):
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    with pytest.raises(UserError, match="give two or more"):
        run_svm(load_dataset(small_data), spec, cache_dir, GRID, combine=True)


@pytest.mark.parametrize(("kernel", "bands"), [("chi2", False), ("intersection", True)])
def test_predict_with_a_saved_bow_model(small_data, cache_dir, kernel, bands):
    dataset = load_dataset(small_data)
    config = BowConfig(sift=SiftConfig(step=8, sizes=(2.7,)), vocabulary=VocabularyConfig(words=20, sample=2000, epochs=2),
                       pyramid=1, bands=bands, sqrt=bands, kernel=kernel)
    outcome = run_bow(dataset, config, cache_dir, GRID)
    images = sorted((small_data / "test" / "gamma").iterdir())
    predictions = predict(outcome.model_path, images, top=2)
    assert [len(p.classes) for p in predictions] == [2] * len(images)
    assert [p.classes[0] for p in predictions] == ["gamma"] * len(images)  # three stripe frequencies: separable


def test_missing_or_foreign_model_files_are_clear_errors(tmp_path, small_data):
    with pytest.raises(UserError, match="not found"):
        predict(tmp_path / "none.skops", [small_data])
    (tmp_path / "junk.skops").write_text("not a model")
    with pytest.raises(UserError, match="is not a transfer model file"):
        predict(tmp_path / "junk.skops", [small_data])
    save_estimator(tmp_path / "future.skops", {"kind": "svm", "format": 999})
    with pytest.raises(UserError, match="model format 999"):
        predict(tmp_path / "future.skops", [small_data])
    save_payload(tmp_path / "bare.skops", {"kind": "svm"})
    with pytest.raises(UserError, match="svm model file without model, classes, features, layer_key, extraction_key"):
        predict(tmp_path / "bare.skops", [small_data])


def test_a_model_file_missing_a_field_or_with_a_wrong_class_list_is_refused_on_load(tmp_path, small_data, cache_dir):
    dataset = load_dataset(small_data)
    spec = FeatureSpec(weights="random", layers=("relu7",), image_size=32, precision="fp32")
    extract(dataset, spec, cache_dir, RunOptions(device="cpu", batch_size=8, workers=0, progress=False))
    model_path = run_svm(dataset, spec, cache_dir, GRID)[0].model_path
    assert len(load_model(model_path).classes) == 3
    payload = load_estimator(model_path, "a model file")  # the raw fields, as an altered file would hold them
    without_key = {k: v for k, v in payload.items() if k not in ("extraction_key", "format")}
    save_payload(tmp_path / "no-key.skops", without_key)
    with pytest.raises(UserError, match="without extraction_key"):
        predict(tmp_path / "no-key.skops", [small_data / "test"])
    save_payload(tmp_path / "two-names.skops", {**payload, "classes": ["alpha", "beta"]})
    with pytest.raises(UserError, match="names 2 class\\(es\\) but its classifier scores 3"):
        predict(tmp_path / "two-names.skops", [small_data / "test"])
    with pytest.raises(UserError, match="does not exist"):  # the intact file reaches the images
        predict(model_path, [tmp_path / "no-such-image.jpg"])
