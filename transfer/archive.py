"""Saved estimators in the skops format: a zip of JSON and ``.npy`` members.

Loading builds only types skops trusts (scikit-learn estimators, numpy arrays, builtins), so a crafted file
cannot run code the way a pickle can; every member carries a CRC-32 that is checked when it is read, so a
flipped byte is an error, not a silently different model. Torch weights travel inside as numpy arrays.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DamagedFile
from .files import atomic_path

SKOPS_SUFFIX = ".skops"


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
