"""Content keys: the one place that hashes. A key names a cached file or a stored run by everything that
determines its content, so the same inputs find it again and different inputs never do.

Each key kind has its own version: bumping one (its file format or its meaning changed) invalidates
that kind and the kinds built on it, because a child key includes its parent keys explicitly
(a run key holds the dataset fingerprint and the feature key, never a version of another kind).
`tests/test_keys.py` pins every kind to a literal, so a refactor that changes a key fails a test.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any


class KeyKind(str, enum.Enum):  # noqa: UP042 -- not StrEnum: keys hash its members' text, which must not change
    DATASET = "dataset"  # image listing: contents, classes, splits
    FEATURES = "features"  # a feature cache file: network, weights, pooling, precision, preprocessing
    VOCABULARY = "vocabulary"  # BoW stage files
    WORDS = "words"
    FISHER_ENCODER = "fisher-encoder"  # PCA + Gaussian mixture of Fisher vectors
    SVM = "svm"  # stored runs and their model files
    PROBE = "probe"
    FEWSHOT = "fewshot"  # one probe on one few-shot subset (shot count, seed)
    BOW = "bow"
    FISHER = "fisher"
    HEAD = "head"
    HEAD_CHECKPOINT = "head-checkpoint"
    NETWORK = "network"
    SCRATCH = "scratch"
    REPORT = "report"


VERSIONS: dict[KeyKind, int] = {
    KeyKind.DATASET: 1,
    KeyKind.FEATURES: 4,  # 3: rows keyed by image content, not by the split; 4: the views averaged
    KeyKind.VOCABULARY: 3,  # 3: from the dataset and SIFT settings (no SIFT file), own dense SIFT
    KeyKind.WORDS: 3,  # 3: the descriptors' positions inside (no SIFT file)
    KeyKind.FISHER_ENCODER: 2,  # 2: from the dataset and SIFT settings (no SIFT file)
    KeyKind.SVM: 1,
    KeyKind.PROBE: 1,
    KeyKind.FEWSHOT: 1,
    KeyKind.BOW: 1,
    KeyKind.FISHER: 1,
    KeyKind.HEAD: 1,
    KeyKind.HEAD_CHECKPOINT: 1,
    KeyKind.NETWORK: 1,
    KeyKind.SCRATCH: 2,  # 2: the training precision is part of the key
    KeyKind.REPORT: 1,
}


def _plain(value: Any) -> Any:
    """What JSON cannot encode directly, as plain data: dataclasses, enums, paths."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot use {type(value).__name__} in a content key")


def content_key(kind: KeyKind, **fields: Any) -> str:
    """16 hex digits naming ``fields`` as a ``kind`` key (field order does not matter)."""
    payload = {"kind": kind.value, "version": VERSIONS[kind], **fields}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_plain).encode()).hexdigest()[:16]


def bytes_digest(data: bytes) -> str:
    """Digest of one file's bytes (an image): identical bytes, identical digest."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@cache
def file_digest(path: Path) -> str:
    """Digest of a (large) file's bytes, read in blocks: a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
