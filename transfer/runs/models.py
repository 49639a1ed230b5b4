"""Model files (`transfer predict` input): skops archives (`core/archive.py`) with every field `predict` reads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from transfer.core.archive import SKOPS_SUFFIX, load_estimator, save_estimator
from transfer.core.choices import MODEL_COMMANDS, ModelKind
from transfer.core.errors import UserError

MODEL_FORMAT = 2  # 1: joblib pickles (refused: loading them could run code)


def save_model(path: Path, payload: dict) -> Path:
    """A model file with everything `transfer predict` needs."""
    return save_estimator(path, {"format": MODEL_FORMAT, **payload})


# What `transfer predict` reads from each kind of model file, checked on load.
_READS_EXTRACTION = {"features": ("weights", "layers", "spatial"), "layer_key": (),
                     "extraction_key": ("backbone", "weights", "pooling", "precision", "preprocessing")}
_FIELDS: dict[ModelKind, dict[str, tuple[str, ...]]] = {
    ModelKind.SVM: {"model": (), "classes": ()},  # and `_READS_EXTRACTION`, or a list of them as "parts"
    ModelKind.BOW: {"model": (), "classes": (), "vocabulary": (), "bow_config": ()},
    ModelKind.FISHER: {"model": (), "classes": (), "encoder": (), "fisher_config": ()},
    ModelKind.HEAD: {"classes": (), "head": ("name", "hidden", "dropout"), "head_state": (), "in_features": (),
                     **_READS_EXTRACTION},
    ModelKind.NETWORK: {"classes": (), "head": ("name", "hidden", "dropout"), "state": (),
                        "extraction_key": _READS_EXTRACTION["extraction_key"]},
}


def _missing_fields(payload: dict, fields: dict[str, tuple[str, ...]], within: str = "") -> list[str]:
    missing = []
    for name, inner in fields.items():
        if name not in payload:
            missing.append(within + name)
        else:
            value = payload[name]
            missing += [f"{within}{name}.{key}" for key in inner if not isinstance(value, dict) or key not in value]
    return missing


def _output_count(payload: dict) -> int | None:
    """How many classes the classifier scores: an estimator's classes, or the rows of the last weight matrix
    of a saved head or network (the output layer comes last in their state)."""
    if "model" in payload:
        classes = getattr(payload["model"], "classes_", None)
        return None if classes is None else len(classes)
    state = payload.get("head_state", payload.get("state")) or {}
    matrices = [value for value in state.values() if np.ndim(value) == 2]
    return int(np.shape(matrices[-1])[0]) if matrices else None


def check_payload(path: Path, payload: dict) -> None:
    """Every field `transfer predict` reads is there, and the class list fits the classifier's outputs."""
    kind = ModelKind(payload["kind"])
    missing = _missing_fields(payload, _FIELDS[kind])
    if kind == ModelKind.SVM:
        parts = payload.get("parts")
        if isinstance(parts, list) and parts:
            missing += [m for i, part in enumerate(parts) for m in
                        (_missing_fields(part, _READS_EXTRACTION, f"parts[{i}].") if isinstance(part, dict) else [f"parts[{i}]"])]
        else:
            missing += _missing_fields(payload, _READS_EXTRACTION)
    if missing:
        raise UserError(f"{path} is a {kind} model file without {', '.join(missing)}: it was not written by this "
                        f"transfer or was altered; re-run the command that made it (`transfer results --models`)")
    classes = payload["classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise UserError(f"{path}: its class list is not a list of names")
    outputs = _output_count(payload)
    if outputs is not None and outputs != len(classes):
        raise UserError(f"{path} names {len(classes)} class(es) but its classifier scores {outputs}: the file was "
                        f"altered or mixed up; re-run the command that made it")


def _is_pickle(path: Path) -> bool:
    """joblib writes a pickle (protocol byte 0x80), possibly zlib-compressed (0x78)."""
    with open(path, "rb") as file:
        return file.read(1) in (b"\x80", b"\x78")


def load_model(path: Path) -> dict:
    """A model file written by `transfer svm`, `bow` or `finetune`; anything else is a clear error.
    Pickle-based files of earlier versions are never loaded: a pickle can run any code it contains."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; `transfer results` lists the model file of every run")
    expected = f"a transfer model file (written by {MODEL_COMMANDS})"
    if not zipfile.is_zipfile(path) and _is_pickle(path):
        raise UserError(
            f"{path} is a pickle-based model file from an earlier transfer; loading a pickle can run any code "
            f"it contains, so it is not loaded. Re-create it by re-running the command that made it (`transfer "
            f"results` shows its settings): the new file is a {SKOPS_SUFFIX} file, which loads without running code.")
    payload = load_estimator(path, expected)
    if not isinstance(payload, dict) or payload.get("kind") not in set(ModelKind):
        raise UserError(f"{path} is not {expected}")
    if payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} has model format {payload.get('format')}, this transfer reads {MODEL_FORMAT}; re-run the fit")
    check_payload(path, payload)
    return payload
