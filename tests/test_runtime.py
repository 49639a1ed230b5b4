"""The forward pass's runtime: compiled features equal eager ones, a failed compile runs eager, and `auto`
compiles only where its measurements say it pays back, remembering them in the cache folder."""

import json

import h5py
import numpy as np
import pytest
import torch

from transfer.data.datasets import load_dataset
from transfer.features import runtime
from transfer.features.cache import read_features
from transfer.features.extract import extract
from transfer.features.spec import FeatureSpec, RunOptions

pytest.importorskip("timm")


def _features(small_data, cache_dir, precision: str, which: str, batch_size: int = 8):
    dataset = load_dataset(small_data)
    features = FeatureSpec(backbone="timm:resnet18", weights="random", image_size=64, precision=precision)
    options = RunOptions(device="cpu", batch_size=batch_size, workers=0, progress=False, runtime=which)
    outcome = extract(dataset, features, cache_dir, options)
    values = np.concatenate([read_features(outcome.path, "pre_logits", dataset).splits[s].features for s in ("train", "test")])
    return outcome, values


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("precision, at_least", [("fp32", 0.99999), ("bf16", 0.999)])
def test_compiled_features_equal_eager_ones(small_data, tmp_path, precision, at_least):
    """21 images in batches of 8: the last batch is padded to the compiled size and cut back; the graph
    compiled once is the one every batch runs (a recompile, e.g. for another kind of tensor, fails)."""
    eager, eager_values = _features(small_data, tmp_path / "eager", precision, "eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled, compiled_values = _features(small_data, tmp_path / "compiled", precision, "compiled")
    assert (eager.runtime.runtime, compiled.runtime.runtime) == ("eager", "compiled")
    assert compiled_values.shape == eager_values.shape == (21, 512)
    assert _cosines(compiled_values, eager_values).min() >= at_least
    recorded = json.loads(h5py.File(compiled.path, "r").attrs["runtimes"])
    assert [entry["runtime"] for entry in recorded] == ["compiled"] and recorded[0]["compile_seconds"] > 0


def test_a_compile_that_fails_runs_eager_and_says_why(small_data, cache_dir, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    outcome, values = _features(small_data, cache_dir, "fp32", "compiled")
    assert outcome.runtime.runtime == "eager" and "no C++ compiler here" in outcome.runtime.reason
    assert values.shape == (21, 512)
    assert "could not be compiled (RuntimeError: no C++ compiler here); running it eager" in capsys.readouterr().err


def test_auto_does_not_compile_for_a_short_extraction(small_data, cache_dir, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled a 21-image extraction"))
    outcome, _ = _features(small_data, cache_dir, "fp32", "auto")
    assert outcome.runtime.runtime == "eager" and outcome.runtime.reason.startswith("21 images (about 0 s eager) are too few to try compiling: tried from 60 s")
    assert not (cache_dir / runtime.MEMO_FILE).exists()  # nothing measured of the compiled runtime


def test_auto_measures_once_remembers_and_decides_by_the_payback(small_data, tmp_path, monkeypatch):
    """The compiler stands in for itself here (the eager extractor, 'compiled' in a second): what is tested
    is the decision, the compile's own features are the first test's."""
    monkeypatch.setattr(runtime, "MIN_EAGER_SECONDS_TO_TRY", 0.0)
    monkeypatch.setattr(runtime, "_compiled", lambda extractor, batch, device, precision: (extractor, 1.0))
    first, _ = _features(small_data, tmp_path / "cache", "fp32", "auto")
    assert first.runtime.reason.startswith("measured now")
    assert first.runtime.eager_images_per_s > 0 and first.runtime.compiled_images_per_s > 0
    (entry,) = json.loads((tmp_path / "cache" / runtime.MEMO_FILE).read_text()).values()
    assert entry["compile_seconds"] == 1.0
    (tmp_path / "cache" / first.path.name).unlink()  # extract again: the speeds are known now
    again, _ = _features(small_data, tmp_path / "cache", "fp32", "auto")
    # 21 images cannot pay back a one-second compile, whatever the speeds
    assert again.runtime.runtime == "eager" and again.runtime.reason.startswith("measured earlier")


def test_the_payback_rule():
    assert runtime._pays_back(images=1000, eager=10.0, compiled=20.0, compile_seconds=30.0)  # 100 s → 50 + 30 s
    assert not runtime._pays_back(images=100, eager=10.0, compiled=20.0, compile_seconds=30.0)  # 10 s → 5 + 30 s
    assert not runtime._pays_back(images=10**6, eager=20.0, compiled=10.0, compile_seconds=0.0)  # slower


def test_predict_runs_the_same_forward_pass_and_the_report_says_which_ran(small_data, cache_dir, tmp_path, monkeypatch):
    from transfer.classifiers.settings import GridConfig
    from transfer.reports.report import write_report
    from transfer.runs.jobs import run_svm
    from transfer.runs.predict import predict
    from transfer.runs.store import ResultsStore

    dataset = load_dataset(small_data)
    features = FeatureSpec(backbone="timm:resnet18", weights="random", image_size=64, precision="fp32")
    extract(dataset, features, cache_dir, RunOptions(device="cpu", batch_size=8, workers=0, progress=False, runtime="eager"))
    (svm,) = run_svm(dataset, features, cache_dir, GridConfig(c_grid=(1.0,), cv=2, jobs=1))
    (run,) = ResultsStore(cache_dir / "results.sqlite").runs()
    assert run.timings["extract_runtimes"] == ["runtime eager: asked for"]
    page = write_report([run], tmp_path / "report").markdown.read_text()
    assert "forward pass: runtime eager: asked for" in page

    images = [small_data / "test"]
    eager = predict(svm.model_path, images, top=3, device="cpu", batch_size=4, runtime="eager")
    compiled = predict(svm.model_path, images, top=3, device="cpu", batch_size=4, runtime="compiled")
    assert len(eager) == 9 and [p.classes for p in compiled] == [p.classes for p in eager]
    np.testing.assert_allclose([p.scores for p in compiled], [p.scores for p in eager], rtol=1e-3, atol=1e-4)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled a 9-image predict"))
    assert [p.classes for p in predict(svm.model_path, images, top=3, device="cpu", batch_size=4)] == [p.classes for p in eager]
