"""`transfer run`: plan order, skip-when-cached, validation with line numbers, failure isolation, resume."""

from pathlib import Path

import pytest
import torch

from transfer.core.errors import UserError
from transfer.study.plan import Overrides, open_dataset, plan_stages, run_stages, select
from transfer.study.schema import load_study

STUDY = """\
[study]
name = "tiny"

[data]
path = "{data}"

[[features]]
backbone = "vgg16"
weights = "random"
layers = ["relu7", "pool5"]
poolings = ["max", "avg"]
image_size = 32
batch_size = 8

[svm]
c_grid = {c_grid}
cv = 2

[bow]
pyramids = [0, 1]
step = 8
sizes = [2.7]
words = 8
sample = 2000
c_grid = [1]
cv = 2

[heads]
names = ["fc", "mlp:16"]
epochs = 2

[scratch]
archs = ["deep"]
size = 16
ladder = false
epochs = 2

[report]
name = "tiny"
"""


def write_study(tmp_path: Path, data: Path, c_grid: str = "[0.1, 1]", text: str = STUDY) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text.format(data=data, c_grid=c_grid))
    return path


def run(path: Path, cache_dir: Path, tmp_path: Path, only: list[str] = ()) -> dict[str, str]:
    study = load_study(path)
    dataset = open_dataset(study, Overrides(), fetch_missing=False)
    stages = select(plan_stages(study, dataset, cache_dir, Overrides(), tmp_path / "reports"), list(only))
    return {report.stage.name: report.status for report in run_stages(stages)}


def test_stages_come_in_dependency_order(tmp_path, small_data, cache_dir):
    study = load_study(write_study(tmp_path, small_data))
    stages = plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides())
    names = [s.name for s in stages]
    assert names == [
        "extract vgg16/max·32px (random weights)", "svm vgg16/max·32px/relu7", "svm vgg16/max·32px/pool5", "head vgg16·32px/fc3",
        "head vgg16·32px/mlp:16", "extract vgg16/avg·32px (random weights)", "svm vgg16/avg·32px/relu7", "svm vgg16/avg·32px/pool5",
        "bow L0", "bow L1", "scratch deep 16px", "report",
    ]
    for index, stage in enumerate(stages):
        assert all(need in names[:index] for need in stage.needs), stage.name
    only_svm = [s.name for s in select(stages, ["svm vgg16/avg·32px/*"])]
    assert only_svm == ["extract vgg16/avg·32px (random weights)", "svm vgg16/avg·32px/relu7", "svm vgg16/avg·32px/pool5"]
    with pytest.raises(UserError, match="matches no stage"):
        select(stages, ["nothing"])


def test_second_run_skips_everything_and_a_new_c_grid_reruns_only_the_svms(tmp_path, small_data, cache_dir):
    path = write_study(tmp_path, small_data)
    first = run(path, cache_dir, tmp_path)
    assert set(first.values()) == {"ran"}, first
    assert (tmp_path / "reports" / "tiny" / "report.md").exists()
    assert set(run(path, cache_dir, tmp_path).values()) == {"cached"}
    path = write_study(tmp_path, small_data, c_grid="[0.01, 0.1, 1]")
    third = run(path, cache_dir, tmp_path)
    ran = {name for name, status in third.items() if status == "ran"}
    assert ran == {"svm vgg16/max·32px/relu7", "svm vgg16/max·32px/pool5", "svm vgg16/avg·32px/relu7", "svm vgg16/avg·32px/pool5", "report"}


def test_a_failing_stage_blocks_only_what_needs_it(tmp_path, small_data, cache_dir):
    not_vgg = tmp_path / "not_vgg.pt"
    torch.save({"weight": torch.zeros(2)}, not_vgg)
    text = STUDY.replace('poolings = ["max", "avg"]', 'poolings = ["max"]') + (
        f'\n[[features]]\nbackbone = "vgg16"\nweights = "{not_vgg}"\nlayers = ["relu7"]\npoolings = ["avg"]\nimage_size = 32\n')
    statuses = run(write_study(tmp_path, small_data, text=text), cache_dir, tmp_path)
    bad_extract = next(name for name in statuses if name.startswith("extract vgg16/avg·32px"))
    assert statuses[bad_extract] == "failed"
    assert statuses["svm vgg16/avg·32px/relu7"] == "blocked"
    assert statuses["svm vgg16/max·32px/relu7"] == statuses["bow L1"] == statuses["report"] == "ran"


def test_an_interrupted_run_picks_up_where_it_stopped(tmp_path, small_data, cache_dir):
    path = write_study(tmp_path, small_data)
    study = load_study(path)
    stages = plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides(), tmp_path / "reports")

    def interrupt():
        raise KeyboardInterrupt

    stages[3].run = interrupt
    first = {r.stage.name: r.status for r in run_stages(stages)}
    assert list(first.values()) == ["ran", "ran", "ran", "interrupted"]
    second = run(path, cache_dir, tmp_path)
    assert [second[name] for name in first] == ["cached", "cached", "cached", "ran"]
    assert all(status == "ran" for name, status in second.items() if name not in first)


def test_dry_run_prints_the_plan_and_computes_nothing(tmp_path, small_data, cache_dir):
    from typer.testing import CliRunner

    from transfer.cli.main import app

    path = write_study(tmp_path, small_data)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "12 of 12 stage(s) would run" in result.output and "svm vgg16/avg·32px/pool5" in result.output
    assert not list(cache_dir.glob("*.h5"))
    bad = CliRunner().invoke(app, ["run", str(tmp_path / "nope.toml")])
    assert isinstance(bad.exception, UserError) and "does not exist" in str(bad.exception)


def test_a_study_whose_weights_cannot_load_stops_before_any_stage(tmp_path, small_data, monkeypatch):
    from dataclasses import replace

    from typer.testing import CliRunner

    from transfer.cli.main import app
    from transfer.features.backbones import BACKBONES

    monkeypatch.setitem(BACKBONES, "vgg16", replace(BACKBONES["vgg16"], pretrained=replace(BACKBONES["vgg16"].pretrained, missing=lambda: "no network here")))
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(data=small_data, c_grid="[1]").replace('weights = "random"', 'weights = "imagenet"'))
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["run", str(study), "--cache-dir", str(cache)])
    assert isinstance(result.exception, UserError)  # the installed command prints it and exits with 2
    message = str(result.exception)
    assert "vgg16: no network here" in message
    assert "TRANSFER_VGG16_WEIGHTS=/path/to/vgg16-397923af.pth" in message
    assert "make study STUDY=pipelines/fifteen_scene_lite0.toml" in message
    assert not list(cache.glob("*.h5"))
    assert not (cache / "bow").exists()  # nothing ran, not even the stages that need no weights
    dry = CliRunner().invoke(app, ["run", str(study), "--cache-dir", str(cache), "--dry-run"])
    assert dry.exit_code == 0
    assert "vgg16: no network here" in dry.output
    other_weights = CliRunner().invoke(app, ["run", str(study), "--cache-dir", str(cache), "--dry-run", "--weights", "random"])
    assert "no network here" not in other_weights.output
    keep_going = CliRunner().invoke(app, ["run", str(study), "--cache-dir", str(cache), "--dry-run", "--keep-going"])
    assert "no network here" not in keep_going.output


def test_entries_that_differ_in_views_are_stages_of_their_own_and_a_repeated_entry_is_refused(tmp_path, small_data, cache_dir):
    entry = '\n[[features]]\nbackbone = "vgg16"\nweights = "random"\nlayers = ["relu7"]\nimage_size = 32\n'
    base = STUDY.split("[[features]]")[0] + "[svm]\nc_grid = [1]\ncv = 2\n"
    study = load_study(write_study(tmp_path, small_data, text=base + entry + entry.replace("image_size", 'views = "flip"\nimage_size')))
    names = [s.name for s in plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides())]
    assert "svm vgg16/max·32px/relu7" in names and "svm vgg16/max·flip·32px/relu7" in names
    study = load_study(write_study(tmp_path, small_data, text=base + entry + entry))
    with pytest.raises(UserError, match="same stage twice: extract vgg16/max·32px"):
        plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides())


def test_combined_layers_are_one_more_svm_stage_and_a_single_layer_is_refused_at_its_line(tmp_path, small_data, cache_dir):
    text = STUDY.replace("batch_size = 8\n", "batch_size = 8\ncombine = true\n", 1).replace('poolings = ["max", "avg"]', 'poolings = ["max"]')
    path = write_study(tmp_path, small_data, text=text)
    statuses = run(path, cache_dir, tmp_path, only=["svm vgg16/max·32px/relu7+pool5"])
    assert statuses == {"extract vgg16/max·32px (random weights)": "ran", "svm vgg16/max·32px/relu7+pool5": "ran"}
    assert run(path, cache_dir, tmp_path, only=["svm vgg16/max·32px/relu7+pool5"])["svm vgg16/max·32px/relu7+pool5"] == "cached"
    single = write_study(tmp_path, small_data, text=text.replace('layers = ["relu7", "pool5"]', 'layers = ["relu7"]'))
    line = single.read_text().splitlines().index("combine = true") + 1
    with pytest.raises(UserError, match=f"{single}:{line}: combining puts several layers side by side"):
        load_study(single)


COMBINED_STUDY = """\
[data]
path = "{data}"

[[features]]
name = "small"
backbone = "vgg16"
weights = "random"
layers = ["pool5"]
image_size = 32

[[features]]
name = "large"
backbone = "vgg16"
weights = "random"
layers = ["pool5"]
image_size = 64
views = "flip"

[[combine]]
features = ["small", "large"]

[svm]
c_grid = [1]
cv = 2
"""


def test_combine_puts_named_entries_side_by_side_in_one_svm_stage(tmp_path, small_data, cache_dir):
    path = write_study(tmp_path, small_data, text=COMBINED_STUDY)
    study = load_study(path)
    stages = plan_stages(study, open_dataset(study, Overrides(), False), cache_dir, Overrides())
    combined = stages[-1]
    assert combined.name == "svm small+large"
    assert combined.needs == ["extract vgg16/max·32px (random weights)", "extract vgg16/max·flip·64px (random weights)"]
    assert run(path, cache_dir, tmp_path, only=["svm small+large"]) == {
        "extract vgg16/max·32px (random weights)": "ran", "extract vgg16/max·flip·64px (random weights)": "ran",
        "svm small+large": "ran"}
    assert run(path, cache_dir, tmp_path, only=["svm small+large"])["svm small+large"] == "cached"
    from transfer.runs.store import ResultsStore

    (stored,) = [r for r in ResultsStore(cache_dir / "results.sqlite").runs() if r.layer == "pool5+pool5"]
    assert [part["image_size"] for part in stored.config["parts"]] == [32, 64]


@pytest.mark.parametrize("change, replacement, at_line, message", [
    ('"small", "large"]', '"small", "big"]', 'features = ["small", "big"]', "no \\[\\[features\\]\\] entry is named 'big'"),
    ('"small", "large"]', '"small"]', 'features = ["small"]', "a combination puts several extractions side by side"),
    ('name = "large"', 'name = "small"', 'name = "small"', "two \\[\\[features\\]\\] entries are named 'small'"),
    ("image_size = 64", 'image_size = 64\npoolings = ["max", "avg"]', 'features = ["small", "large"]', "entry 'large' has several poolings"),
])
def test_a_wrong_combine_entry_is_reported_at_its_line(tmp_path, small_data, change, replacement, at_line, message):
    path = write_study(tmp_path, small_data, text=COMBINED_STUDY.replace(change, replacement))
    lines = path.read_text().splitlines()
    line = len(lines) - lines[::-1].index(at_line)  # the last line with that text
    with pytest.raises(UserError, match=f"{path}:{line}: {message}"):
        load_study(path)


def test_combine_without_an_svm_section_is_refused(tmp_path, small_data):
    path = write_study(tmp_path, small_data, text=COMBINED_STUDY.split("[svm]")[0])
    with pytest.raises(UserError, match="add an \\[svm\\] section"):
        load_study(path)
