"""Saved estimators in the skops format: a zip of JSON and ``.npy`` members.

Loading builds only types skops trusts (scikit-learn estimators, numpy arrays, builtins), so a crafted file
cannot run code the way a pickle can; every member carries a CRC-32 that is checked when it is read, so a
flipped byte is an error, not a silently different model. Torch weights travel inside as numpy arrays.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from transfer.core.errors import DamagedFile
from transfer.core.files import atomic_path

SKOPS_SUFFIX = ".skops"


def save_estimator(path: Path, obj: Any) -> Path:
    """Write any skops-serialisable object atomically."""
    import skops.io

    with atomic_path(path) as partial:
        skops.io.dump(obj, partial)
    return path


# This package's own functions that a model may name (looked up by name, never unpickled).
OWN_FUNCTIONS = ["transfer.classifiers.svm.signed_sqrt", "transfer.descriptors.bow.intersection_kernel"]
# Their names in files written before the package had subpackages: such files are read with today's names.
MOVED_FUNCTIONS = {"transfer.classifiers.signed_sqrt": OWN_FUNCTIONS[0], "transfer.bow.intersection_kernel": OWN_FUNCTIONS[1]}
SCHEMA = "schema.json"  # the member of a skops archive that names every type it holds


def _rename_functions(node: Any) -> bool:
    """Rename moved functions in a skops schema, in place; whether any was."""
    children = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []
    renamed = [_rename_functions(child) for child in children]
    if isinstance(node, dict) and node.get("__loader__") == "FunctionNode":
        current = MOVED_FUNCTIONS.get(f"{node.get('__module__')}.{node.get('__class__')}")
        if current is not None:
            node["__module__"] = current.rsplit(".", 1)[0]
            renamed.append(True)
    return any(renamed)


def _current_names(path: Path) -> Path | bytes:
    """The file, or when it names moved functions, its bytes with today's names (every other member as it is)."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read(SCHEMA))
        if not _rename_functions(schema):
            return path
        members = [(info, archive.read(info)) for info in archive.infolist() if info.filename != SCHEMA]
        schema_info = archive.getinfo(SCHEMA)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as renamed:
        renamed.writestr(schema_info, json.dumps(schema))
        for info, data in members:
            renamed.writestr(info, data)
    return out.getvalue()


def load_estimator(path: Path, what: str) -> Any:
    """Read a skops file; a damaged or foreign file is a `DamagedFile` naming ``what`` was expected.
    Types outside skops' trusted set and `OWN_FUNCTIONS` are refused before anything is built."""
    import skops.io

    if not zipfile.is_zipfile(path):
        raise DamagedFile(f"{path} is not {what} (not a skops file)", path)
    try:
        source = _current_names(path)
        untrusted = (skops.io.get_untrusted_types(data=source) if isinstance(source, bytes)
                     else skops.io.get_untrusted_types(file=source))
    except Exception as error:  # BadZipFile, KeyError, JSON errors: all "not what we wrote"
        raise DamagedFile(f"{path} is damaged or not {what} ({type(error).__name__}: {error})", path) from error
    untrusted = [name for name in untrusted if name not in OWN_FUNCTIONS]
    if untrusted:
        shown = ", ".join(untrusted[:5]) + (" …" if len(untrusted) > 5 else "")
        raise DamagedFile(f"{path} holds types that {what} never contains ({shown}); it was not loaded", path)
    try:
        if isinstance(source, bytes):
            return skops.io.loads(source, trusted=OWN_FUNCTIONS)
        return skops.io.load(source, trusted=OWN_FUNCTIONS)
    except Exception as error:  # a bad CRC-32, a truncated member, a schema that does not fit
        raise DamagedFile(f"{path} is damaged or not {what} ({type(error).__name__}: {error})", path) from error


def state_arrays(state: dict) -> dict[str, np.ndarray]:
    """A torch state_dict as numpy arrays (what a skops file can hold)."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in state.items()}


def state_tensors(state: dict) -> dict:
    import torch

    return {name: torch.as_tensor(np.asarray(value)) for name, value in state.items()}
