"""Small generated image folders: fast, offline, with a visible difference between classes."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ["COLUMNS"] = "200"  # rich tables in captured output are not squeezed to 80 columns


@pytest.fixture(scope="module", autouse=True)
def long_lived_objects_out_of_the_collectors_sight():
    """Every feature extractor runs a full garbage collection (backbones.feature_extractor frees the
    tracer's cycle that way), and a full collection walks every object of every library imported so
    far, tenths of a second each time. What is alive when a test module starts (modules, their
    tables, the session's fixtures) is moved where collections no longer walk it: gc.freeze()."""
    gc.collect()
    gc.freeze()


def _built_once(build):
    """``build``, run once; later calls get a copy (the seed is fixed, so the weights are the same, and a
    copy because fine-tuning changes them)."""
    built = []

    def copy_of_built():
        if not built:
            built.append(build())
        return copy.deepcopy(built[0])

    return copy_of_built


@pytest.fixture(scope="session", autouse=True)
def networks_built_once_per_session():
    """VGG16's random initialisation (138M parameters) was the largest single cost of the suite, paid
    on every model build in every test: in this process each network is built once and copied."""
    from transfer.features import backbones

    originals = dict(backbones.BACKBONES)
    backbones.BACKBONES.update({
        name: dataclasses.replace(spec, architecture=dataclasses.replace(spec.architecture, build=_built_once(spec.architecture.build)))
        for name, spec in originals.items()})
    yield
    backbones.BACKBONES.update(originals)


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


VGG16_SPEC = dict(weights="random", layers=("relu7", "pool5"), image_size=32, precision="fp32")
# Ray's tests compare engines on this one: a random Lite0 builds in milliseconds, VGG16's in about a second.
LITE0_SPEC = dict(backbone="efficientnet_lite0", weights="random", layers=("avgpool", "conv_head"), image_size=32,
                  precision="fp32")


@pytest.fixture
def one_thread():
    """torch on one thread, as on each Ray actor: Lite0's features are then bit-identical across engines
    (with two threads its depthwise convolutions add in another order)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def extract_until_killed(data: Path, cache: Path, rows: int, batch_size: int, spec: dict = VGG16_SPEC,
                         threads: int | None = None) -> int:
    """Run a local extraction of ``spec`` (FeatureSpec's fields; by default fp32 relu7+pool5 of a random
    VGG16 at 32 px) in a child process that SIGKILLs itself once ``rows`` rows are written: nothing gets
    to clean up. ``threads``: torch's thread count there. Returns the child's exit code."""
    script = textwrap.dedent(
        f"""
        import json, os, signal, sys
        from pathlib import Path
        import torch
        from transfer.data.datasets import load_dataset
        from transfer.features.extract import FeatureSpec, RunOptions, extract

        def die(rows):
            if rows >= {rows}:
                os.kill(os.getpid(), signal.SIGKILL)

        if {threads!r}:
            torch.set_num_threads({threads!r})
        spec = FeatureSpec(**json.loads(sys.argv[3]))
        run = RunOptions(device="cpu", batch_size={batch_size}, workers=0, progress=False)
        extract(load_dataset(sys.argv[1]), spec, Path(sys.argv[2]), run, on_batch=die)
        """
    )
    return subprocess.run([sys.executable, "-c", script, str(data), str(cache), json.dumps(spec)]).returncode
