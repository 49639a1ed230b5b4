"""`--engine ray`: a local Ray cluster (2 CPUs), small generated images, random weights."""

import shutil

import numpy as np
import pytest

from transfer.data.datasets import load_dataset
from transfer.features.cache import read_features
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions

from .conftest import LITE0_SPEC, VGG16_SPEC, extract_until_killed

ray = pytest.importorskip("ray")

SPEC = FeatureSpec(**VGG16_SPEC)
LITE0 = FeatureSpec(**LITE0_SPEC)
LOCAL = RunOptions(device="cpu", batch_size=4, workers=0, progress=False)
RAY = RunOptions(batch_size=4, progress=False, engine="ray", actors=2)
RAY_ONE = RunOptions(batch_size=4, progress=False, engine="ray", actors=1)  # one actor starts sooner than two


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module; the engine joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _features(path, dataset, spec):
    return {(layer, split): read_features(path, layer, dataset).splits[split].features
            for layer in spec.layers for split in ("train", "test")}


def _assert_same(path_a, path_b, dataset, spec=LITE0):
    a, b = _features(path_a, dataset, spec), _features(path_b, dataset, spec)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_ray_features_equal_the_local_engines_bit_for_bit(small_data, tmp_path):
    dataset = load_dataset(small_data)
    local = extract(dataset, SPEC, tmp_path / "local", LOCAL)
    distributed = extract(dataset, SPEC, tmp_path / "ray", RAY)
    assert distributed.images == 21
    assert distributed.path.name == local.path.name  # the same cache key
    _assert_same(local.path, distributed.path, dataset, SPEC)


def test_an_interrupted_ray_run_resumes_with_either_engine(small_data, tmp_path, one_thread):
    dataset = load_dataset(small_data)
    reference = extract(dataset, LITE0, tmp_path / "reference", LOCAL)

    def interrupt(rows):
        if rows >= 4:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, LITE0, tmp_path / "interrupted", RAY_ONE, on_batch=interrupt)
    for resume_with in (RAY_ONE, LOCAL):
        cache = shutil.copytree(tmp_path / "interrupted", tmp_path / resume_with.engine)
        resumed = extract(dataset, LITE0, cache, resume_with)
        assert resumed.images == 21 - 4
        _assert_same(reference.path, resumed.path, dataset)


def test_a_killed_local_run_resumes_on_ray(small_data, tmp_path, one_thread):
    assert extract_until_killed(small_data, tmp_path / "killed", rows=8, batch_size=4, spec=LITE0_SPEC, threads=1) == -9
    dataset = load_dataset(small_data)
    resumed = extract(dataset, LITE0, tmp_path / "killed", RAY_ONE)
    assert resumed.images == 21 - 8
    _assert_same(extract(dataset, LITE0, tmp_path / "reference", LOCAL).path, resumed.path, dataset)


def test_unreadable_images_are_skipped_with_the_local_warning(small_data, tmp_path, capsys):
    (small_data / "train" / "beta" / "broken.jpg").write_bytes(b"not an image")
    outcome = extract(load_dataset(small_data), LITE0, tmp_path / "cache", RAY_ONE)
    assert outcome.skipped == ["train/beta/broken.jpg"]
    assert "skipping unreadable image train/beta/broken.jpg" in capsys.readouterr().err
    assert len(read_features(outcome.path, "avgpool", load_dataset(small_data)).splits["train"].labels) == 12


def test_ray_options_are_checked_where_they_are_built():
    with pytest.raises(Exception, match="actors must be at least 1"):
        RunOptions(engine="ray", actors=0)
    with pytest.raises(Exception, match="are for the ray engine"):
        RunOptions(actors=2)
    with pytest.raises(Exception, match="engine 'spark' is not one of: local, ray"):
        RunOptions(engine="spark")


def test_a_study_checks_its_engine_settings_with_their_line(tmp_path, small_data):
    from transfer.core.errors import UserError
    from transfer.study.schema import load_study

    study = tmp_path / "study.toml"
    study.write_text(f'[data]\npath = "{small_data}"\n\n[[features]]\nweights = "random"\nengine = "ray"\nactors = -1\n')
    with pytest.raises(UserError, match=r"study.toml:7: actors must be at least 1"):
        load_study(study)
