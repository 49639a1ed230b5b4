"""Small generated image folders: fast, offline, with a visible difference between classes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["COLUMNS"] = "200"  # rich tables in captured output are not squeezed to 80 columns


def make_image(path: Path, label: int, index: int, size: int = 48) -> None:
    """Class `label` is a stripe pattern of its own frequency, with per-image noise."""
    rng = np.random.default_rng(1000 * label + index)
    x = np.linspace(0, (label + 1) * np.pi * 2, size)
    pattern = (np.sin(x)[None, :] * np.ones((size, 1)) + 1) * 100
    pixels = np.clip(pattern + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def make_dataset(root: Path, classes=("alpha", "beta", "gamma"), train: int = 4, test: int = 3) -> Path:
    for label, name in enumerate(classes):
        for i in range(train):
            make_image(root / "train" / name / f"img_{i:03d}.png", label, i)
        for i in range(test):
            make_image(root / "test" / name / f"img_{i:03d}.png", label, 100 + i)
    return root


def make_pooled(root: Path, classes=("a", "b"), per_class: int = 10) -> Path:
    """A ``DIR/<class>/*`` folder, split by the tool itself."""
    for label, name in enumerate(classes):
        for i in range(per_class):
            make_image(root / name / f"{i}.png", label, i)
    return root


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def extract_until_killed(data: Path, cache: Path, rows: int, batch_size: int) -> int:
    """Run a local fp32 relu7+pool5 extraction (random weights, 32 px) in a child process that SIGKILLs
    itself once ``rows`` rows are written: nothing gets to clean up. Returns the child's exit code."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from transfer.datasets import load_dataset
        from transfer.extraction import FeatureSpec, RunOptions, extract

        def die(rows):
            if rows >= {rows}:
                os.kill(os.getpid(), signal.SIGKILL)

        spec = FeatureSpec(weights="random", layers=("relu7", "pool5"), image_size=32, precision="fp32")
        run = RunOptions(device="cpu", batch_size={batch_size}, workers=0, progress=False)
        extract(load_dataset(sys.argv[1]), spec, Path(sys.argv[2]), run, on_batch=die)
        """
    )
    return subprocess.run([sys.executable, "-c", script, str(data), str(cache)]).returncode
