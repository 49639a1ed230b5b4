import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from tests.test_bow import CONFIG as BOW_CONFIG
from transfer.classifiers.settings import GridConfig
from transfer.core.config import ConfigError
from transfer.data.datasets import load_dataset
from transfer.descriptors.fisher import (
    fine_cells,
    fisher_vector,
    fit_encoder,
    image_vectors,
    load_vectors,
    posteriors,
    root_sift,
)
from transfer.descriptors.settings import FisherConfig, SiftConfig
from transfer.runs.jobs import run_fisher
from transfer.runs.models import load_model
from transfer.runs.predict import predict
from transfer.runs.store import ResultsStore

CONFIG = FisherConfig(sift=BOW_CONFIG.sift, components=4, pca=8, sample=400)
GRID = GridConfig(c_grid=(0.1, 1.0), cv=2, jobs=1)


def _encoder(seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    descriptors = rng.integers(0, 256, (300, 128)).astype(np.uint8)
    positions = rng.random((300, 2)).astype(np.float32)
    pca = PCA(6, random_state=0).fit(root_sift(descriptors))
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(pca.transform(root_sift(descriptors)))
    return {"pca": pca, "gmm": gmm}, descriptors, positions


def test_each_descriptor_falls_in_one_region_of_each_pyramid_grid():
    positions = np.array([[0.1, 0.1], [0.9, 0.5], [0.5, 0.99]], dtype=np.float32)
    cells, membership = fine_cells(positions, pyramid=True)
    masks = membership[:, cells].T  # descriptors × regions
    assert masks.shape == (3, 1 + 4 + 3)
    np.testing.assert_array_equal(masks.sum(axis=1), [3, 3, 3])
    np.testing.assert_array_equal(masks[:, 1:5].argmax(axis=1), [0, 3, 3])  # quadrants, row-major
    np.testing.assert_array_equal(masks[:, 5:].argmax(axis=1), [0, 1, 2])  # horizontal strips
    np.testing.assert_array_equal(membership.sum(axis=1), [12, 3, 3, 3, 3, 4, 4, 4])  # of the 2×6 cells
    assert fine_cells(positions, pyramid=False)[1].shape == (1, 1)


def test_pyramid_regions_match_their_descriptors_encoded_alone():
    encoder, descriptors, positions = _encoder()
    vector = fisher_vector(descriptors, positions, encoder, pyramid=True).reshape(8, -1) * np.sqrt(8)
    top_left = (positions[:, 0] < 0.5) & (positions[:, 1] < 0.5)
    alone = fisher_vector(descriptors[top_left], positions[top_left], encoder, pyramid=False)
    np.testing.assert_allclose(vector[1], alone, atol=1e-4)
    middle_strip = (positions[:, 1] >= 1 / 3) & (positions[:, 1] < 2 / 3)
    np.testing.assert_allclose(vector[6], fisher_vector(descriptors[middle_strip], positions[middle_strip], encoder, False), atol=1e-4)


def test_the_whole_image_vector_matches_the_fisher_gradients_written_descriptor_by_descriptor():
    encoder, descriptors, positions = _encoder()
    pca, gmm = encoder["pca"], encoder["gmm"]
    x = pca.transform(root_sift(descriptors))
    posteriors = gmm.predict_proba(x)
    by_means, by_variances = np.zeros_like(gmm.means_), np.zeros_like(gmm.means_)
    for row, gamma in zip(x, posteriors):
        standardised = (row - gmm.means_) / np.sqrt(gmm.covariances_)
        by_means += gamma[:, None] * standardised
        by_variances += gamma[:, None] * (standardised**2 - 1)
    by_means /= len(x) * np.sqrt(gmm.weights_)[:, None]
    by_variances /= len(x) * np.sqrt(2 * gmm.weights_)[:, None]
    expected = np.concatenate([by_means, by_variances], axis=1).ravel()
    expected = np.sign(expected) * np.sqrt(np.abs(expected))
    expected /= np.linalg.norm(expected)
    # float32 sums of squares against the float64 loop
    np.testing.assert_allclose(fisher_vector(descriptors, positions, encoder, pyramid=False), expected, atol=1e-4)


def test_posteriors_match_the_mixtures_own():
    encoder, descriptors, _ = _encoder()
    x = encoder["pca"].transform(root_sift(descriptors)).astype(np.float32)
    np.testing.assert_allclose(posteriors(x, encoder["gmm"]), encoder["gmm"].predict_proba(x), atol=1e-5)


def test_a_pyramid_vector_has_unit_norm_and_one_block_per_region():
    encoder, descriptors, positions = _encoder()
    vector = fisher_vector(descriptors, positions, encoder, pyramid=True)
    assert vector.shape == (8 * 2 * 3 * 6,)
    np.testing.assert_allclose(np.linalg.norm(vector.reshape(8, -1), axis=1), np.full(8, 1 / np.sqrt(8)), rtol=1e-5)


@pytest.mark.parametrize("field, value", [("pca", 129), ("pca", 0), ("components", 0), ("sample", 3)])
def test_a_setting_out_of_range_names_its_field(field, value):
    with pytest.raises(ConfigError) as error:
        FisherConfig(**{"components": 4, "pca": 8, "sample": 400, field: value})
    assert error.value.field == field


def test_fisher_vectors_are_recorded_and_their_model_predicts(small_data, cache_dir):
    dataset = load_dataset(small_data)
    outcome = run_fisher(dataset, CONFIG, cache_dir, GRID)
    assert [f.name.split("-")[0] for f in (cache_dir / "bow").iterdir()] == ["fisher"]  # the encoder; no descriptors
    assert outcome.result.test_accuracy == 1.0  # three stripe frequencies: separable
    run = ResultsStore(cache_dir / "results.sqlite").runs(method="bow")[-1]
    assert (run.layer, run.config["encoding"], run.config["components"]) == ("fisher-pyramid", "fisher", 4)
    assert set(run.timings) >= {"vocabulary", "encoding", "fit_seconds"}
    assert load_model(outcome.model_path).KIND == "fisher"

    images = sorted((small_data / "test" / "beta").iterdir())
    predictions = predict(outcome.model_path, images)
    assert [p.classes[0] for p in predictions] == ["beta"] * len(images)


def test_vectors_computed_on_several_cores_equal_those_of_one_image_at_a_time(small_data, cache_dir):
    dataset = load_dataset(small_data)
    encoder, _ = fit_encoder(dataset, CONFIG, cache_dir, jobs=1)
    vectors, labels = load_vectors(dataset, encoder, CONFIG, jobs=2)["test"]
    one_by_one, readable = image_vectors([dataset.path(s) for s in dataset.samples("test")], CONFIG, encoder)
    assert readable.all()
    np.testing.assert_array_equal(labels, [s.label for s in dataset.samples("test")])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-6)


def test_changing_only_c_reuses_the_encoder(small_data, cache_dir, monkeypatch):
    dataset = load_dataset(small_data)
    run_fisher(dataset, CONFIG, cache_dir, GRID)
    encoder_file = next((cache_dir / "bow").glob("fisher-*.skops"))
    stamp = encoder_file.stat().st_mtime_ns
    monkeypatch.setattr("sklearn.mixture.GaussianMixture.fit", lambda *a, **k: pytest.fail("the mixture was refitted"))
    run_fisher(dataset, CONFIG, cache_dir, GridConfig(c_grid=(10.0,), cv=2, jobs=1))
    assert encoder_file.stat().st_mtime_ns == stamp


def test_fewer_training_descriptors_than_gaussians_is_a_clear_error(small_data, cache_dir):
    from transfer.core.errors import UserError

    config = FisherConfig(sift=SiftConfig(step=16, sizes=(2.7,)), components=500, pca=8, sample=100_000)
    with pytest.raises(UserError, match="lower --components"):
        run_fisher(load_dataset(small_data), config, cache_dir, GRID)


FISHER_STUDY = """\
[data]
path = "{data}"

[bow]
step = 8
sizes = [2.7]
words = 8
sample = 400
c_grid = [1]
cv = 2

[fisher]
step = 8
sizes = [2.7]
components = 4
pca = {pca}
sample = 400
c_grid = [1]
cv = 2
"""


def test_a_study_runs_fisher_after_bow_and_skips_it_when_stored(tmp_path, small_data, cache_dir):
    from tests.test_pipeline import run

    path = tmp_path / "fisher.toml"
    path.write_text(FISHER_STUDY.format(data=small_data, pca=8))
    assert run(path, cache_dir, tmp_path) == {"bow L0": "ran", "fisher pyramid": "ran"}
    assert run(path, cache_dir, tmp_path) == {"bow L0": "cached", "fisher pyramid": "cached"}


def test_fisher_is_a_stage_kind_of_its_own_that_waits_for_no_bow_stage(tmp_path, small_data, cache_dir):
    from transfer.study.plan import Overrides, open_dataset, plan_stages, select
    from transfer.study.schema import load_study

    path = tmp_path / "fisher.toml"
    path.write_text(_with_kernels('["chi2", "intersection"]').format(data=small_data, pca=8))
    study = load_study(path)
    stages = {s.name: s for s in plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides())}
    assert (stages["fisher pyramid"].kind, stages["fisher pyramid"].needs) == ("fisher", [])  # a failed BoW blocks nothing
    assert stages["bow L0 intersection"].needs == ["bow L0"]  # it shares the first BoW stage's vocabulary and words
    assert [s.name for s in select(list(stages.values()), ["fisher"])] == ["fisher pyramid"]


def test_the_study_checker_reports_a_fisher_setting_at_its_line(tmp_path, small_data):
    from transfer.core.errors import UserError
    from transfer.study.schema import load_study

    path = tmp_path / "fisher.toml"
    path.write_text(FISHER_STUDY.format(data=small_data, pca=200))
    line = path.read_text().splitlines().index("pca = 200") + 1
    with pytest.raises(UserError, match=f"{path}:{line}: pca must be between 1 and 128"):
        load_study(path)


def _with_kernels(kernels: str) -> str:
    return FISHER_STUDY.replace("[bow]\n", f"[bow]\nkernels = {kernels}\n")


def test_a_study_runs_each_bow_kernel_on_one_vocabulary_and_words_file(tmp_path, small_data, cache_dir):
    from tests.test_pipeline import run

    path = tmp_path / "kernels.toml"
    path.write_text(_with_kernels('["chi2", "intersection"]').format(data=small_data, pca=8))
    assert run(path, cache_dir, tmp_path) == {"bow L0": "ran", "bow L0 intersection": "ran", "fisher pyramid": "ran"}
    assert sorted(f.name.split("-")[0] for f in (cache_dir / "bow").iterdir()) == ["fisher", "vocab", "words"]  # one of each


def test_the_study_checker_reports_an_unknown_kernel_at_its_line(tmp_path, small_data):
    from transfer.core.errors import UserError
    from transfer.study.schema import load_study

    path = tmp_path / "kernels.toml"
    path.write_text(_with_kernels('["rbf"]').format(data=small_data, pca=8))
    line = path.read_text().splitlines().index('kernels = ["rbf"]') + 1
    with pytest.raises(UserError, match=f"{path}:{line}: kernel 'rbf' is not one of: chi2, intersection"):
        load_study(path)


def test_an_unreadable_image_is_skipped_with_a_warning(tmp_path, cache_dir, capsys):
    from PIL import Image

    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "data")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(data / "test" / "beta" / "dot.png")
    outcome = run_fisher(load_dataset(data), CONFIG, cache_dir, GRID)
    assert "skipping unreadable image test/beta/dot.png: too small for dense SIFT" in capsys.readouterr().err
    assert np.asarray(outcome.result.confusion).sum() == 9  # the nine readable test images


def test_the_study_report_shows_the_fisher_run_beside_bow(tmp_path, small_data, cache_dir):
    import json

    from tests.test_pipeline import run
    from transfer.features.cache import FeatureCache
    from transfer.runs.store import ResultsStore

    path = tmp_path / "fisher.toml"
    path.write_text(FISHER_STUDY.format(data=small_data, pca=8) + '\n[report]\nname = "fisher"\n')
    assert run(path, cache_dir, tmp_path)["report"] == "ran"
    reported = json.loads((tmp_path / "reports" / "fisher" / "inputs.json").read_text())["runs"]
    stored = ResultsStore(FeatureCache(cache_dir).results_path).runs()
    assert sorted(r.id for r in stored) == reported
    assert sorted(r.config.get("encoding", "bow") for r in stored) == ["bow", "fisher"]
    assert run(path, cache_dir, tmp_path)["report"] == "cached"
