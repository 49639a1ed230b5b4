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

from .choices import ModelKind
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
    expected = "a transfer model file (written by `transfer svm`, `bow` or `finetune`)"
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
    return payload
