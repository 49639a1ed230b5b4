"""HDF5 feature cache, one file per extraction, named by a digest of everything that shapes the features.

Layout of a file::

    attrs: key (JSON), classes (JSON), dataset_root, versions (JSON), format
    /<split>/labels, /<split>/paths, /<split>/valid      one row per image
    /<split>/<layer key>                                 (images, dims) float32, attr rows_done

Rows are written batch by batch and ``rows_done`` is advanced only after the batch is flushed,
so a killed run resumes where it stopped and an unfinished layer is never read as finished.
Every array carries a Fletcher-32 checksum, verified on every read: a flipped byte is reported as
damage, never used as a feature. A damaged or truncated file is moved aside and extracted again; a
file locked by another process is left alone. (HDF5's newer file format also checksums its metadata,
but it marks a file "open for write" until closed, so a killed extraction could not resume.)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .backbones import Preprocessing
from .console import warn
from .datasets import SPLITS, ImageDataset
from .errors import DamagedFile, UserError
from .files import move_aside

FORMAT_VERSION = 2  # 2: checksummed arrays


@dataclass(frozen=True)
class ExtractionKey:
    """Everything that determines the feature values; its digest names the cache file."""

    dataset: str  # ImageDataset.fingerprint
    backbone: str
    weights: str  # backbones.weights_id
    pooling: str
    precision: str  # resolved: fp32 | bf16
    preprocessing: Preprocessing

    def as_dict(self) -> dict:
        return {"format": FORMAT_VERSION, **asdict(self)}

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{self.backbone}-{self.pooling}-{self.precision}-{self.digest}.h5"


def layer_key(layer: str, spatial: str, is_spatial: bool) -> str:
    """Name of a layer's dataset: the spatial reduction is part of it unless it is plain flattening."""
    return f"{layer}:{spatial}" if is_spatial and spatial != "flatten" else layer


def _versions() -> dict[str, str]:
    import sys

    import torch
    import torchvision

    from . import __version__

    return {
        "transfer": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
    }


def locked_by_another_process(path: Path, exclusive: bool) -> bool:
    """Whether another process holds HDF5's lock on ``path`` (HDF5 locks files with flock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: HDF5's own error stands
        return False
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


def open_h5(path: Path, mode: str, what: str = "feature cache file") -> h5py.File:
    """Open an HDF5 cache file; a lock held elsewhere is a `UserError` (wait), anything else that keeps it
    from opening is a `DamagedFile`."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        if locked_by_another_process(path, exclusive=mode != "r"):
            raise UserError(f"{path} is being written by another transfer process; wait for it to finish") from error
        if mode == "r" and not path.exists():
            raise
        raise DamagedFile(f"{what} {path} is damaged ({error})", path) from error


@contextmanager
def reading(path: Path, what: str = "feature cache file") -> Iterator[h5py.File]:
    """Read-only access in which any failure to read (a checksum mismatch, a missing part) is a `DamagedFile`."""
    with open_h5(path, "r", what) as h5:
        try:
            yield h5
        except (OSError, KeyError, ValueError) as error:
            raise DamagedFile(f"{what} {path} is damaged ({type(error).__name__}: {error})", path) from error


def recover(error: DamagedFile) -> None:
    """Move a damaged cache file aside (kept for inspection, never read again) so that it is computed again."""
    aside = move_aside(error.path)
    warn(f"{error}; moved it to {aside.name}, computing it again")


class FeatureFile:
    """Writer for one extraction file; use as a context manager."""

    def __init__(self, path: Path, key: ExtractionKey, dataset: ImageDataset) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.h5 = open_h5(path, "a")
        except DamagedFile as error:  # truncated by a hard crash, or damaged: start this file afresh
            recover(error)
            self.h5 = open_h5(path, "a")
        if "key" not in self.h5.attrs:  # new, or killed while writing its header
            for name in list(self.h5):
                del self.h5[name]
            self._initialise(key, dataset)

    def _initialise(self, key: ExtractionKey, dataset: ImageDataset) -> None:
        h5 = self.h5
        h5.attrs["format"] = FORMAT_VERSION
        h5.attrs["classes"] = json.dumps(dataset.classes)
        h5.attrs["dataset_root"] = str(dataset.root.resolve())
        h5.attrs["versions"] = json.dumps(_versions())
        h5.attrs["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
        for split in SPLITS:
            samples = dataset.samples(split)
            group = h5.create_group(split)
            group.create_dataset("labels", data=np.array([s.label for s in samples], dtype=np.int32), fletcher32=True)
            group.create_dataset("paths", data=[s.relpath for s in samples], dtype=h5py.string_dtype())
            group.create_dataset("valid", data=np.zeros(len(samples), dtype=bool), fletcher32=True)
        h5.attrs["key"] = json.dumps(key.as_dict(), sort_keys=True)  # last: marks a usable header
        h5.flush()

    def __enter__(self) -> "FeatureFile":
        return self

    def __exit__(self, *exc) -> None:
        self.h5.close()

    def rows(self, split: str) -> int:
        return len(self.h5[split]["labels"])

    def rows_done(self, split: str, layer: str) -> int:
        group = self.h5[split]
        return int(group[layer].attrs["rows_done"]) if layer in group else 0

    def write_batch(self, split: str, start: int, features: dict[str, np.ndarray], valid: np.ndarray) -> None:
        group = self.h5[split]
        stop = start + len(valid)
        for layer, array in features.items():
            if layer not in group:
                rows = self.rows(split)
                group.create_dataset(
                    layer, shape=(rows, array.shape[1]), dtype=np.float32,
                    chunks=(max(1, min(rows, len(valid))), array.shape[1]), fletcher32=True,
                )
                group[layer].attrs["rows_done"] = 0
            group[layer][start:stop] = array
        group["valid"][start:stop] = valid
        self.h5.flush()
        for layer in features:
            group[layer].attrs["rows_done"] = max(stop, self.rows_done(split, layer))
        self.h5.flush()

    def add_timing(self, split: str, images: int, seconds: float, loader_wait: float) -> None:
        attrs = self.h5[split].attrs
        for name, value in (("images_timed", images), ("seconds", seconds), ("loader_wait_seconds", loader_wait)):
            attrs[name] = attrs.get(name, 0) + value


@dataclass
class SplitFeatures:
    features: np.ndarray
    labels: np.ndarray
    paths: list[str]


@dataclass
class LayerFeatures:
    layer: str
    classes: list[str]
    splits: dict[str, SplitFeatures]
    source: Path


def read_features(path: Path, layer: str) -> LayerFeatures:
    """Features of one layer for both splits, valid rows only; an unfinished layer is an error, a damaged
    file a `DamagedFile`."""
    with reading(path) as h5:
        splits = {}
        for split in SPLITS:
            group = h5[split]
            if layer not in group or int(group[layer].attrs["rows_done"]) < len(group["labels"]):
                raise UserError(f"layer {layer!r} of {path} is not completely extracted; run the extraction again")
            valid = group["valid"][:]
            splits[split] = SplitFeatures(
                features=group[layer][:][valid],
                labels=group["labels"][:][valid],
                paths=[p.decode() for p, ok in zip(group["paths"][:], valid) if ok],
            )
        return LayerFeatures(layer, json.loads(h5.attrs["classes"]), splits, path)


def extraction_timing(path: Path) -> dict[str, float]:
    """Seconds and images/s of the network passes that filled this file (all splits, all passes)."""
    with reading(path) as h5:
        seconds = sum(float(h5[s].attrs.get("seconds", 0)) for s in SPLITS)
        images = sum(int(h5[s].attrs.get("images_timed", 0)) for s in SPLITS)
        wait = sum(float(h5[s].attrs.get("loader_wait_seconds", 0)) for s in SPLITS)
    return {"extract_seconds": seconds, "extract_images": images,
            "extract_images_per_s": images / seconds if seconds else 0.0, "loader_wait_seconds": wait}


def complete_layers(path: Path) -> list[str]:
    with reading(path) as h5:
        layers = [k for k in h5["train"] if k not in ("labels", "paths", "valid")]
        return [
            layer for layer in layers
            if all(layer in h5[s] and h5[s][layer].attrs["rows_done"] >= len(h5[s]["labels"]) for s in SPLITS)
        ]


@dataclass
class CacheEntry:
    path: Path
    size_bytes: int
    key: dict | None  # None: unreadable
    layers: dict[str, str]  # layer -> "1500×4096 / 2985×4096" or "partial 320/1500"
    skipped: list[str]


def _skipped(group: h5py.Group, rows: int) -> list[str]:
    """Relative paths of the unreadable images among the first `rows` of a split."""
    return [p.decode() for p, ok in zip(group["paths"][:rows], group["valid"][:rows]) if not ok]


def extraction_summary(path: Path, layers: list[str]) -> tuple[dict[str, dict[str, tuple[int, int]]], list[str]]:
    """(split -> layer -> (rows, dims), skipped images) of a finished extraction, read-only."""
    with reading(path) as h5:
        shapes = {split: {layer: tuple(h5[split][layer].shape) for layer in layers} for split in SPLITS}
        skipped = [p for split in SPLITS for p in _skipped(h5[split], len(h5[split]["labels"]))]
    return shapes, skipped


def describe_file(path: Path) -> CacheEntry:
    size = path.stat().st_size
    try:
        with reading(path) as h5:
            key = json.loads(h5.attrs["key"])
            layers: dict[str, str] = {}
            skipped: list[str] = []
            for split in SPLITS:
                group = h5[split]
                rows = len(group["labels"])
                done_rows = 0
                for name in group:
                    if name in ("labels", "paths", "valid"):
                        continue
                    done = int(group[name].attrs["rows_done"])
                    done_rows = max(done_rows, done)
                    shape = f"{rows}×{group[name].shape[1]}" if done >= rows else f"partial {done}/{rows}"
                    layers[name] = f"{layers[name]} / {shape}" if name in layers else shape
                skipped += _skipped(group, done_rows)
            return CacheEntry(path, size, key, layers, skipped)
    except UserError:  # damaged, or locked by a writer
        return CacheEntry(path, size, None, {}, [])


# Folders of the cache root that hold derived artifacts besides the extraction files.
ARTIFACT_FOLDERS = ("bow", "heads", "scratch", "models")


class FeatureCache:
    """The cache folder: extraction files at the top, other artifacts in ``ARTIFACT_FOLDERS``. The
    results store (``results.sqlite``) lives here too but is not a cache: nothing here removes it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: ExtractionKey) -> Path:
        return self.root / key.filename

    def files(self) -> Iterator[Path]:
        return iter(sorted(self.root.glob("*.h5")) if self.root.is_dir() else [])

    def entries(self) -> list[CacheEntry]:
        return [describe_file(path) for path in self.files()]

    def artifacts(self) -> list[Path]:
        """Every cached file: extraction files (and damaged ones moved aside), BoW stages, checkpoints, models."""
        if not self.root.is_dir():
            return []
        top = [p for p in self.root.iterdir() if p.is_file() and (p.suffix == ".h5" or ".h5.damaged-" in p.name)]
        inner = [p for folder in ARTIFACT_FOLDERS for p in (self.root / folder).glob("*") if p.is_file()]
        return sorted(top + inner)

    def remove(self, pattern: str) -> list[Path]:
        """Delete cached files whose path inside the cache contains ``pattern`` ('all' for every one)."""
        if not pattern.strip():
            raise UserError("an empty pattern would match every cached file; give part of a file name, "
                            "or 'all' to remove everything (`transfer cache ls` lists them)")
        removed = [p for p in self.artifacts() if pattern == "all" or pattern in p.relative_to(self.root).as_posix()]
        for path in removed:
            path.unlink()
        return removed
