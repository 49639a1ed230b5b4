"""Every script in bench/ still imports against today's package and answers --help (they run by hand,
so nothing else would notice a name they import going away); the helpers they share at least import."""

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
FILES = sorted(BENCH.glob("*.py"))
# a helper is what the scripts import from their folder
HELPERS = [path for path in FILES if any(f"from {path.stem} import" in other.read_text() for other in FILES)]
SCRIPTS = [path for path in FILES if path not in HELPERS]


def test_bench_holds_scripts_and_helpers():
    assert len(SCRIPTS) >= 10 and [path.name for path in HELPERS] == ["features.py"]


@pytest.fixture
def as_run_by_hand(monkeypatch):
    """sys.path as `python bench/X.py` has it: the script's folder first (they import their helpers)."""
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_bench_script_imports_and_answers_help(script, as_run_by_hand, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("helper", HELPERS, ids=lambda path: path.name)
def test_a_bench_helper_imports(helper, as_run_by_hand):
    assert runpy.run_path(str(helper), run_name=helper.stem)
