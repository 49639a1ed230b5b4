"""The command line as a user meets it: help, errors without tracebacks, and a small end-to-end run."""

import subprocess
import sys

from typer.testing import CliRunner

from transfer.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help():
    for command in ([], ["extract"], ["svm"], ["bow"], ["predict"], ["inspect"], ["finetune"], ["report"], ["layers"], ["results"], ["run"], ["scratch"], ["summary"], ["data", "info"], ["data", "fetch"],
                    ["cache", "ls"], ["cache", "rm"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_help_does_not_import_torch_or_scikit_learn():
    """What keeps `--help` fast (a wall-clock limit would flake on a busy machine)."""
    out = subprocess.run([sys.executable, "-c", "import sys; from transfer.cli.main import app; "
                          "print(sorted({'torch', 'sklearn'} & set(sys.modules)))"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_user_errors_are_messages_with_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "extract", "--data", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "transfer.cli.main", "results", "--cache-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no results store" in result.stderr


def test_extract_svm_results_and_cache_commands_end_to_end(small_data, cache_dir):
    common = ["--data", str(small_data), "--weights", "random", "--image-size", "32", "--precision", "fp32",
              "--cache-dir", str(cache_dir)]
    result = invoke("extract", "--layer", "relu7", "--workers", "0", *common)
    assert result.exit_code == 0, result.output
    assert "12×4096" in result.output and "extracted 21 images" in result.output
    assert "cached: nothing to compute" in invoke("extract", "--layer", "relu7", *common).output
    result = invoke("svm", "--layer", "relu7", "--C-grid", "0.1,1", "--cv", "2", "--jobs", "1", *common)
    assert result.exit_code == 0, result.output
    assert "chosen by CV" in result.output and "results store run #1" in result.output
    listing = invoke("results", "--cache-dir", str(cache_dir))
    assert "svm" in listing.output and "relu7" in listing.output
    assert "no runs match" in invoke("results", "--method", "bow", "--cache-dir", str(cache_dir)).output
    assert "relu7: 21 images × 4096" in invoke("cache", "ls", "--cache-dir", str(cache_dir)).output
    assert "removed" in invoke("cache", "rm", "vgg16", "--yes", "--cache-dir", str(cache_dir)).output
    assert "no cached features" in invoke("cache", "ls", "--cache-dir", str(cache_dir)).output


def test_layers_lists_the_vgg16_parameter_total():
    result = invoke("layers")
    assert "total parameters: 138,357,544" in result.output
    assert "relu7" in result.output
