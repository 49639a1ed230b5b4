"""Model files (`transfer predict` input) and other saved estimators: the skops format.

A skops file is a zip of JSON and ``.npy`` members. Loading it builds only types skops trusts
(scikit-learn estimators, numpy arrays, builtins), so a crafted file cannot run code the way a
pickle can; every member carries a CRC-32 that is checked when it is read, so a flipped byte is an
error, not a silently different model. Torch weights travel inside as numpy arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .choices import MODEL_COMMANDS, ModelKind
from .errors import DamagedFile, UserError
from .files import atomic_path

MODEL_FORMAT = 2  # 1: joblib pickles (refused: loading them could run code)
MODEL_SUFFIX = ".skops"


def save_estimator(path: Path, obj: Any) -> Path:
    """Write any skops-serialisable object atomically."""
    import skops.io

    with atomic_path(path) as partial:
        skops.io.dump(obj, partial)
    return path


# This package's own functions that a model may name (looked up by name, never unpickled).
OWN_FUNCTIONS = ["transfer.classifiers.signed_sqrt", "transfer.bow.intersection_kernel"]


def load_estimator(path: Path, what: str) -> Any:
    """Read a skops file; a damaged or foreign file is a `DamagedFile` naming ``what`` was expected.
    Types outside skops' trusted set and `OWN_FUNCTIONS` are refused before anything is built."""
    import skops.io

    if not zipfile.is_zipfile(path):
        raise DamagedFile(f"{path} is not {what} (not a skops file)", path)
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:  # BadZipFile, KeyError, JSON errors: all "not what we wrote"
        raise DamagedFile(f"{path} is damaged or not {what} ({type(error).__name__}: {error})", path) from error
    untrusted = [name for name in untrusted if name not in OWN_FUNCTIONS]
    if untrusted:
        shown = ", ".join(untrusted[:5]) + (" …" if len(untrusted) > 5 else "")
        raise DamagedFile(f"{path} holds types that {what} never contains ({shown}); it was not loaded", path)
    try:
        return skops.io.load(path, trusted=OWN_FUNCTIONS)
    except Exception as error:  # a bad CRC-32, a truncated member, a schema that does not fit
        raise DamagedFile(f"{path} is damaged or not {what} ({type(error).__name__}: {error})", path) from error


def state_arrays(state: dict) -> dict[str, np.ndarray]:
    """A torch state_dict as numpy arrays (what a skops file can hold)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in state.items()}


def state_tensors(state: dict) -> dict:
    import torch

    return {name: torch.as_tensor(np.asarray(value)) for name, value in state.items()}


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
            f"results` shows its settings): the new file is a {MODEL_SUFFIX} file, which loads without running code.")
    payload = load_estimator(path, expected)
    if not isinstance(payload, dict) or payload.get("kind") not in set(ModelKind):
        raise UserError(f"{path} is not {expected}")
    if payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} has model format {payload.get('format')}, this transfer reads {MODEL_FORMAT}; re-run the fit")
    check_payload(path, payload)
    return payload
