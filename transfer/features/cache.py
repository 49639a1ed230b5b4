"""HDF5 feature cache, one file per extraction (network, weights, pooling, precision, preprocessing),
with one row per distinct image *content*: the features of an image do not depend on the data set or
split it is listed in, so a new split, a new seed or a second folder holding the same images reuses
every row, and byte-identical images are computed once.

Layout of a file::

    attrs: key (JSON), format, versions (JSON), created, images_timed, seconds, loader_wait_seconds
    /digests                     (rows,) image content digests (`keys.bytes_digest`), in order of arrival
    /valid                       (rows,) False for an image that could not be read
    /layers/<layer key>/values   (rows, dims) float32
    /layers/<layer key>/done     (rows,) True once that row's values are on disk

A batch's values are flushed before its rows are marked done, so a killed run resumes where it stopped
and an unfinished row is never read. Every array carries a Fletcher-32 checksum, verified on every
read: a flipped byte is reported as damage, never used as a feature. A damaged or truncated file is
moved aside and extracted again; a file locked by another process is left alone. (HDF5's newer file
format also checksums its metadata, but it marks a file "open for write" until closed, so a killed
extraction could not resume.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from transfer.core.console import warn
from transfer.core.errors import DamagedFile, UserError
from transfer.core.files import move_aside, safe_name
from transfer.core.keys import VERSIONS, KeyKind, content_key
from transfer.core.paths import ARTIFACT_FOLDERS, CacheFolder
from transfer.data.datasets import SPLITS, ImageDataset
from transfer.features.backbones import Preprocessing, shown_pooling
from transfer.features.runtime import RuntimeChoice

MAX_CHUNK_BYTES = 8 << 20
TIMING_ATTRS = ("images_timed", "seconds", "loader_wait_seconds")


@dataclass(frozen=True, kw_only=True)
class ExtractionKey:
    """Everything that determines the feature values of an image; its digest names the cache file."""

    backbone: str
    weights: str  # backbones.weights_id
    pooling: str
    precision: str  # resolved: fp32 | bf16
    preprocessing: Preprocessing

    def fields(self) -> dict:
        return {**asdict(self), "preprocessing": self.preprocessing.key_fields()}

    def as_dict(self) -> dict:
        return {"format": VERSIONS[KeyKind.FEATURES], **self.fields()}

    @property
    def digest(self) -> str:
        return content_key(KeyKind.FEATURES, **self.fields())

    @property
    def filename(self) -> str:
        label = "-".join(filter(None, (safe_name(self.backbone), shown_pooling(self.backbone, self.pooling), self.precision)))
        return f"{label}-{self.digest}.h5"

    @property
    def earlier_filename(self) -> str:
        """The name before backbones without pooling variants dropped "max" from it (same key, same digest)."""
        return f"{self.backbone}-{self.pooling}-{self.precision}-{self.digest}.h5"


def layer_key(layer: str, reduction: str) -> str:
    """Name of a layer's dataset: its reduction (of maps or tokens) is part of it unless it is plain flattening."""
    return layer if reduction == "flatten" else f"{layer}:{reduction}"


def _versions() -> dict[str, str]:
    import sys

    import torch
    import torchvision

    from transfer.core.version import __version__

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

    def __init__(self, path: Path, key: ExtractionKey) -> None:
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
            self._initialise(key)
        self.index = {d.decode(): row for row, d in enumerate(self.h5["digests"][:])}

    def _initialise(self, key: ExtractionKey) -> None:
        h5 = self.h5
        h5.attrs["format"] = VERSIONS[KeyKind.FEATURES]
        h5.attrs["versions"] = json.dumps(_versions())
        h5.attrs["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
        h5.create_dataset("digests", (0,), h5py.string_dtype(), maxshape=(None,), chunks=(4096,))
        h5.create_dataset("valid", (0,), bool, maxshape=(None,), chunks=(4096,), fletcher32=True)
        h5.create_group("layers")
        h5.attrs["key"] = json.dumps(key.as_dict(), sort_keys=True)  # last: marks a usable header
        h5.flush()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.h5.close()

    def rows_for(self, digests: list[str]) -> np.ndarray:
        """The row of each image digest, adding rows (not yet done) for digests not seen before."""
        new = [d for d in dict.fromkeys(digests) if d not in self.index]
        if new:
            start = len(self.index)
            for name in ("digests", "valid"):
                self.h5[name].resize(start + len(new), axis=0)
            self.h5["digests"][start:] = new
            for layer in self.h5["layers"].values():
                for name in ("values", "done"):
                    layer[name].resize(start + len(new), axis=0)
            self.index.update((d, start + i) for i, d in enumerate(new))
            self.h5.flush()
        return np.array([self.index[d] for d in digests], dtype=np.int64)

    def done(self, layer: str) -> np.ndarray:
        layers = self.h5["layers"]
        return layers[layer]["done"][:] if layer in layers else np.zeros(len(self.index), dtype=bool)

    def write_batch(self, rows: np.ndarray, features: dict[str, np.ndarray], valid: np.ndarray) -> None:
        """Values of ``rows`` (strictly increasing) for each layer key, then the rows marked done."""
        layers = self.h5["layers"]
        where = slice(int(rows[0]), int(rows[-1]) + 1) if rows[-1] - rows[0] == len(rows) - 1 else rows
        for layer, array in features.items():
            if layer not in layers:
                group = layers.create_group(layer)
                total, dims = len(self.index), array.shape[1]
                chunk_rows = max(1, min(len(rows), MAX_CHUNK_BYTES // (4 * dims)))
                group.create_dataset("values", (total, dims), np.float32, maxshape=(None, dims),
                                     chunks=(chunk_rows, dims), fletcher32=True)
                group.create_dataset("done", data=np.zeros(total, dtype=bool), maxshape=(None,),
                                     chunks=(4096,), fletcher32=True)
            layers[layer]["values"][where] = array
        self.h5["valid"][where] = valid
        self.h5.flush()
        for layer in features:
            layers[layer]["done"][where] = True
        self.h5.flush()

    def add_timing(self, images: int, seconds: float, loader_wait: float, device: str) -> None:
        attrs = self.h5.attrs
        for name, value in zip(TIMING_ATTRS, (images, seconds, loader_wait)):
            attrs[name] = attrs.get(name, 0) + value
        devices = set(json.loads(attrs.get("devices", "[]"))) | {device}
        attrs["devices"] = json.dumps(sorted(devices))

    def add_runtime(self, runtime: RuntimeChoice) -> None:
        """What ran the forward pass (its choice and measured speeds), one entry per extraction run."""
        self.h5.attrs["runtimes"] = json.dumps([*json.loads(self.h5.attrs.get("runtimes", "[]")), runtime.as_dict()])


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


def _split_rows(h5: h5py.File, dataset: ImageDataset) -> dict[str, np.ndarray | None]:
    """Rows of each split's images in this file (the file's index read once); None for a split with an
    image that has no row."""
    index = {d.decode(): row for row, d in enumerate(h5["digests"][:])}
    digests = dataset.file_digests
    found = {}
    for split in SPLITS:
        rows = [index.get(digests[s.relpath]) for s in dataset.samples(split)]
        found[split] = None if None in rows else np.array(rows, dtype=np.int64)
    return found


def _layer_done(h5: h5py.File, layer: str, rows: np.ndarray | None) -> bool:
    return rows is not None and layer in h5["layers"] and bool(h5["layers"][layer]["done"][:][rows].all())


def _read_rows(array: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for any rows (repeats, any order), reading one contiguous slice."""
    if len(rows) == 0:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    low, high = int(rows.min()), int(rows.max()) + 1
    return array[low:high][rows - low]


def read_features(path: Path, layer: str, dataset: ImageDataset) -> LayerFeatures:
    """Features of one layer for both splits of ``dataset``, readable images only; an unfinished layer is
    an error, a damaged file a `DamagedFile`."""
    with reading(path) as h5:
        splits = {}
        for split, rows in _split_rows(h5, dataset).items():
            if rows is None or not _layer_done(h5, layer, rows):
                raise UserError(f"layer {layer!r} of {path} is not extracted for every {split} image; "
                                "run the extraction again")
            valid = _read_rows(h5["valid"], rows)
            samples = dataset.samples(split)
            splits[split] = SplitFeatures(
                features=_read_rows(h5["layers"][layer]["values"], rows[valid]),
                labels=np.array([s.label for s in samples], dtype=np.int32)[valid],
                paths=[s.relpath for s, ok in zip(samples, valid) if ok],
            )
        return LayerFeatures(layer, list(dataset.classes), splits, path)


def extraction_timing(path: Path) -> dict[str, Any]:
    """Seconds and images/s of the network passes that filled this file (all passes, all data sets), the
    devices and what ran the forward pass (each choice of runtime, with its measured speeds)."""
    with reading(path) as h5:
        images, seconds, wait = (float(h5.attrs.get(name, 0)) for name in TIMING_ATTRS)
        devices = json.loads(h5.attrs.get("devices", "[]"))
        runtimes = json.loads(h5.attrs.get("runtimes", "[]"))
    return {"extract_seconds": seconds, "extract_images": int(images),
            "extract_images_per_s": images / seconds if seconds else 0.0, "loader_wait_seconds": wait,
            "extract_devices": devices,
            "extract_runtimes": list(dict.fromkeys(RuntimeChoice.from_dict(r).describe() for r in runtimes))}


def complete_layers(path: Path, dataset: ImageDataset) -> list[str]:
    """Layer keys of this file that are extracted for every image of ``dataset``."""
    with reading(path) as h5:
        rows = list(_split_rows(h5, dataset).values())
        return [layer for layer in h5["layers"] if all(_layer_done(h5, layer, r) for r in rows)]


def extraction_summary(path: Path, layers: list[str], dataset: ImageDataset
                       ) -> tuple[dict[str, dict[str, tuple[int, int]]], list[str]]:
    """(split -> layer -> (readable images, dims), unreadable images) of a finished extraction, read-only."""
    with reading(path) as h5:
        shapes: dict[str, dict[str, tuple[int, int]]] = {}
        skipped: list[str] = []
        for split, rows in _split_rows(h5, dataset).items():
            if rows is None:
                raise UserError(f"{path} has no rows for some {split} images; run the extraction again")
            valid = _read_rows(h5["valid"], rows)
            shapes[split] = {layer: (int(valid.sum()), h5["layers"][layer]["values"].shape[1]) for layer in layers}
            skipped += [s.relpath for s, ok in zip(dataset.samples(split), valid) if not ok]
    return shapes, skipped


@dataclass
class CacheEntry:
    path: Path
    size_bytes: int
    key: dict | None  # None: unreadable
    layers: dict[str, str]  # layer key -> "4470 images × 4096" or "partial 320/4470 images × 4096"
    unreadable: int  # images that could not be read
    earlier_format: int | None = None  # made by an earlier transfer in this format: never read, never reused


def describe_file(path: Path) -> CacheEntry:
    size = path.stat().st_size
    try:
        with reading(path) as h5:
            found = int(h5.attrs.get("format", 0))
            if found != VERSIONS[KeyKind.FEATURES]:
                return CacheEntry(path, size, None, {}, 0, earlier_format=found)
            key = json.loads(h5.attrs["key"])
            total = len(h5["digests"])
            layers = {}
            for name, group in h5["layers"].items():
                done = int(group["done"][:].sum())
                dims = group["values"].shape[1]
                layers[name] = f"{done} images × {dims}" if done == total else f"partial {done}/{total} images × {dims}"
            done_any = np.zeros(total, dtype=bool)
            for group in h5["layers"].values():
                done_any |= group["done"][:]
            unreadable = int((done_any & ~h5["valid"][:]).sum())
            return CacheEntry(path, size, key, layers, unreadable)
    except UserError:  # damaged, or locked by a writer
        return CacheEntry(path, size, None, {}, 0)


# Folders of the cache root that hold derived artifacts besides the extraction files.
class FeatureCache(CacheFolder):
    """The cache folder with its feature files: the extraction file of a key, every cached file, removal."""

    def path_for(self, key: ExtractionKey) -> Path:
        path, earlier = self.root / key.filename, self.root / key.earlier_filename
        if earlier != path and earlier.exists() and not path.exists():
            earlier.rename(path)  # the same features under their present name
        return path

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

    def matching(self, pattern: str) -> list[Path]:
        """Cached files whose path inside the cache contains ``pattern`` ('all' for every one)."""
        if not pattern.strip():
            raise UserError("an empty pattern would match every cached file; give part of a file name, "
                            "or 'all' to remove everything (`transfer cache ls` lists them)")
        return [p for p in self.artifacts() if pattern == "all" or pattern in p.relative_to(self.root).as_posix()]

    def remove(self, pattern: str) -> list[Path]:
        """Delete the files `matching` ``pattern``."""
        removed = self.matching(pattern)
        for path in removed:
            path.unlink(missing_ok=True)  # another process may have removed it meanwhile
        return removed
