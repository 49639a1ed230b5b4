"""Study files: every problem reported at once with its line, by building the very configurations the pipeline runs."""

import pytest

from transfer.core.errors import UserError
from transfer.runs.labels import BowLabel
from transfer.study.schema import load_study

from .test_pipeline import STUDY, write_study


def test_every_problem_of_a_study_file_is_reported_with_its_line(tmp_path, small_data):
    text = STUDY.replace('layers = ["relu7", "pool5"]', 'layers = ["relu7", "pool9"]') \
                .replace('poolings = ["max", "avg"]', 'poolings = ["max", "median"]') \
                .replace("cv = 2\n\n[bow]", "cv = 2\nkernel = \"rbf\"\n\n[bow]") \
                .replace('path = "{data}"', 'path = "{data}/missing"')
    path = write_study(tmp_path, small_data, c_grid="[0.1, -1]", text=text)
    lines = path.read_text().splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(lines, start=1) if fragment in line)

    with pytest.raises(UserError) as error:
        load_study(path)
    message = str(error.value)
    assert "5 problem(s)" in message
    for fragment, words in (("path =", "does not exist"), ("layers =", "'pool9'"), ("poolings =", "median"),
                            ("c_grid = [0.1, -1]", "positive"), ("kernel =", "unknown key 'kernel'")):
        assert f"{path}:{line_of(fragment)}: " in message and words in message, (fragment, message)


def test_a_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[study]\nname = \"x\"\nseed = = 3\n")
    with pytest.raises(UserError, match="line 3"):
        load_study(path)


def test_the_checker_builds_the_pipelines_own_configurations(tmp_path, small_data):
    """Rules live on the configurations; the checker reports their errors at the key the field comes from
    (a plural key for a per-item field), before anything runs."""
    text = STUDY.replace("words = 8", "words = 70000") \
                .replace('names = ["fc", "mlp:16"]', 'names = ["fc", "mlp:x"]\noptimizers = ["sgd", "rmsprop"]') \
                .replace('archs = ["deep"]', 'archs = ["huge"]')
    path = write_study(tmp_path, small_data, text=text)
    lines = path.read_text().splitlines()
    with pytest.raises(UserError) as error:
        load_study(path)
    message = str(error.value)
    assert "4 problem(s)" in message
    for fragment, words in (("words =", "words must be between 2 and 65535"), ("names =", "head mlp:x: expected mlp:H1,H2"),
                            ("optimizers =", "optimizer 'rmsprop' is not one of: sgd, adam"),
                            ("archs =", "unknown arch 'huge'")):
        line = next(i for i, text in enumerate(lines, start=1) if text.startswith(fragment))
        assert f"{path}:{line}: {words}" in message, (fragment, message)


def test_bands_join_only_the_pyramids_that_have_a_level_one(tmp_path, small_data):
    from transfer.study.schema import bow_config

    study = load_study(write_study(tmp_path, small_data, text=STUDY.replace("pyramids = [0, 1]", "pyramids = [0, 1]\nbands = true")))
    assert [bow_config(study, pyramid, "intersection").bands for pyramid in (0, 1)] == [False, True]
    assert [BowLabel(config=bow_config(study, pyramid, "intersection")).variant for pyramid in (0, 1)] == [["intersection"], ["bands", "intersection"]]
