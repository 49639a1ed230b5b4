"""Safe file operations shared by every writer: atomic saves, damaged files moved aside, names kept
inside their folders."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transfer.core.errors import UserError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a unique temporary path in ``path``'s folder; once the block has written it, it is
    flushed to disk and renamed over ``path``. Concurrent savers never share a temporary file, and a
    reader never sees half a file. On an error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh random name, created by the writer itself: the file gets the user's usual permissions
    # (tempfile.mkstemp would make it private to its owner).
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        yield partial
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return path


def move_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged-<time>`` beside it (kept for inspection, never read again)."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    return aside


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name part made of letters, digits, '_', '.' and '-' only (no separators)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def confined(folder: Path, name: str, what: str) -> Path:
    """``folder/name`` for a plain name; a path, '..' or an empty name is refused (it would write elsewhere)."""
    if not name or not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(f"{what} {name!r} must be a plain folder name (letters, digits, '_', '.', '-'), "
                        f"not a path: it names a folder inside {folder}/")
    return folder / name
