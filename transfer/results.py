"""One embedded SQLite store of every run's results; reports and pipelines read it.

WAL mode plus a busy timeout lets several processes append at once without losing a row:
each insert is its own short transaction, and SQLite serialises the writers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    backbone TEXT,
    weights TEXT,
    pooling TEXT,
    layer TEXT,
    precision TEXT,
    config TEXT NOT NULL,
    c_grid TEXT,
    cv_accuracy TEXT,
    test_accuracy_per_c TEXT,
    chosen TEXT,
    cv_best REAL,
    test_accuracy REAL NOT NULL,
    test_std REAL,
    splits INTEGER NOT NULL DEFAULT 1,
    classes TEXT NOT NULL,
    per_class_accuracy TEXT,
    confusion TEXT,
    curves TEXT,
    timings TEXT,
    model_path TEXT,
    versions TEXT
)
"""
JSON_FIELDS = ("config", "c_grid", "cv_accuracy", "test_accuracy_per_c", "chosen", "classes",
               "per_class_accuracy", "confusion", "curves", "timings", "versions")


@dataclass
class RunRecord:
    method: str  # a choices.Method
    dataset: str
    dataset_fingerprint: str
    config: dict
    test_accuracy: float
    classes: list[str]
    backbone: str | None = None
    weights: str | None = None
    pooling: str | None = None
    layer: str | None = None
    precision: str | None = None
    c_grid: list[float] | None = None
    cv_accuracy: list[float] | None = None
    test_accuracy_per_c: list[float] | None = None
    chosen: Any = None  # chosen C, or epochs for a head
    cv_best: float | None = None
    test_std: float | None = None
    splits: int = 1
    per_class_accuracy: list[float] | None = None
    confusion: list[list[int]] | None = None
    curves: dict | None = None
    timings: dict = field(default_factory=dict)
    model_path: str | None = None
    versions: dict = field(default_factory=dict)
    id: int | None = None
    created: str | None = None

    @property
    def chosen_text(self) -> str:
        """The setting chosen on training data, as people read it: "C=0.1", "epoch 12", or ""."""
        if self.chosen is None:
            return ""
        return f"C={self.chosen:g}" if isinstance(self.chosen, (int, float)) else str(self.chosen)


def _source_commit() -> dict[str, str]:
    """The git commit of this package's source, when it runs from a checkout (an editable install)."""
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": found.stdout.strip()} if found.returncode == 0 and found.stdout.strip() else {}


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), **_source_commit()}
    for package in ("transfer", "torch", "torchvision", "scikit-learn", "numpy", "opencv-python-headless"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


class ResultsStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute(SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection; a damaged or foreign file is a `UserError` that says how to go on."""
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=60000")
                db.row_factory = sqlite3.Row
                yield db
            finally:
                db.close()
        except sqlite3.OperationalError as error:  # locked for over a minute, a full disk, no permission
            raise UserError(f"results store {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:
            raise UserError(
                f"results store {self.path} cannot be read ({error}): it is damaged or not a transfer results "
                f"store. Restore it from a copy, or move it away (mv {self.path} {self.path}.damaged) and "
                f"`transfer` starts a new one (re-running a study then recomputes its results)") from error

    def add(self, record: RunRecord) -> int:
        row = asdict(record)
        row.pop("id")
        row["created"] = row["created"] or time.strftime("%Y-%m-%d %H:%M:%S")
        for name in JSON_FIELDS:
            row[name] = json.dumps(row[name])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", list(row.values()))
            db.execute("COMMIT")
            return int(cursor.lastrowid)

    def runs(self, **filters: str | None) -> list[RunRecord]:
        """Rows in insertion order; each non-None filter keeps rows whose column equals it
        (``dataset`` matches any part of the path)."""
        clauses, values = [], []
        for column, value in filters.items():
            if value is None:
                continue
            if column == "dataset":
                clauses.append("dataset LIKE ?")
                values.append(f"%{value}%")
            else:
                clauses.append(f"{column} = ?")
                values.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connection() as db:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY id", values).fetchall()
        return [self._record(row) for row in rows]

    def find(self, key: str) -> RunRecord | None:
        """The latest run whose configuration carries this content key (see ``runs.*_key``)."""
        with self._connection() as db:
            row = db.execute("SELECT * FROM runs WHERE json_extract(config, '$.key') = ? ORDER BY id DESC LIMIT 1",
                             (key,)).fetchone()
        return self._record(row) if row else None

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        data = dict(row)
        for name in JSON_FIELDS:
            data[name] = json.loads(data[name]) if data[name] is not None else None
        return RunRecord(**data)
