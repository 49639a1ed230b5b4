"""Terminal tables fit the terminal: the least important columns are left out (and named), `--wide`
shows them all, and nothing is cut with an ellipsis."""

import pytest

from transfer.cli.display import fitted_table
from transfer.core.console import console


@pytest.fixture
def narrow_terminal():
    before = console.width
    console.width = 80
    yield
    console.width = before


def test_a_wide_table_leaves_out_its_least_important_columns_first(narrow_terminal):
    columns = [("configuration", 0), ("test %", 0), ("method", 2), ("weights", 3), ("extract s", 1)]
    rows = [["vgg16 (random weights) relu7 SVM on colour 224 px crops", "91.62", "svm", "imagenet:vgg16", "123.4"]] * 3
    table, left_out = fitted_table("t", columns, rows)
    # widths (cells fold at 36 characters, plus borders): 39 + 9 + 9 + 17 + 12 + 1 = 87 > 80: weights goes
    assert left_out == ["weights"]
    assert [column.header for column in table.columns] == ["configuration", "test %", "method", "extract s"]
    assert all(column.overflow == "fold" for column in table.columns)
    _, nothing = fitted_table("t", columns, rows, wide=True)
    assert nothing == []


def test_columns_of_rank_zero_stay_however_narrow_the_terminal(narrow_terminal):
    columns = [("a", 0), ("b", 0), ("c", 1)]
    rows = [["x" * 60, "y" * 60, "z"]]
    table, left_out = fitted_table("t", columns, rows)
    assert left_out == ["c"]
    assert [column.header for column in table.columns] == ["a", "b"]


def test_predictions_fit_80_columns_with_paths_relative_to_their_folder(narrow_terminal):
    from transfer.cli.display import print_ranked
    from transfer.runs.predict import Prediction

    folder = "/data/" + "a-very-long-folder-name/" * 4
    predictions = [Prediction(folder + "holiday/beach.jpg", ["coast", "open country"], [0.9, 0.1]),
                   Prediction(folder + "broken.jpg", [], [], "cannot identify image file: not a JPEG, PNG or any format")]
    with console.capture() as captured:
        print_ranked(predictions, "", "score")
    lines = captured.get().splitlines()
    assert lines[0] == "images in " + folder  # the shared folder, once, above the table
    assert max(map(len, lines[1:])) <= 80
    assert "holiday/beach.jpg" in captured.get()
    assert "any format" in captured.get()  # the error folds; nothing is cut with an ellipsis
