"""One embedded SQLite store of every run's results; reports and pipelines read it.

WAL mode plus a busy timeout lets several processes append at once without losing a row:
each insert is its own short transaction, and SQLite serialises the writers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transfer.core.console import warn
from transfer.core.errors import UserError
from transfer.core.keys import bytes_digest

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
    versions TEXT,
    run_key TEXT,
    checksum TEXT
)
"""
# Columns added since the first stores: (name, type); an older store gets them on opening.
ADDED_COLUMNS = (("run_key", "TEXT"), ("checksum", "TEXT"))
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


def _checksum(row: dict) -> str:
    """Digest of a stored row's cells as they are written (every column but id and the checksum itself):
    a changed byte anywhere in the row, a figure or its JSON, no longer matches."""
    # Numbers as floats: SQLite gives a REAL column's integer back as a float, an INTEGER column's float as an int.
    cells = {name: float(value) if isinstance(value, (int, float)) else value
             for name, value in row.items() if name not in ("id", "checksum")}
    return bytes_digest(json.dumps(cells, sort_keys=True).encode())


class ResultsStore:
    """Every row carries a checksum of its cells: a damaged row is named and left out (the stage that made it
    then runs again), and the others stay readable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._warned: set[int] = set()
        with self._connection() as db:
            db.execute(SCHEMA)
            if self._added_columns(db):
                self._upgrade(db)
            db.execute("CREATE INDEX IF NOT EXISTS runs_by_key ON runs (run_key)")  # `find`, once per study stage

    @staticmethod
    def _added_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
        present = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
        return [(name, kind) for name, kind in ADDED_COLUMNS if name not in present]

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """A store written before rows had keys and checksums: the columns added, and each row's filled in
        from its cells as they are now (a row whose JSON no longer parses keeps none: it reads as damaged)."""
        db.execute("BEGIN IMMEDIATE")  # another process may have upgraded it meanwhile: look again inside
        for name, kind in self._added_columns(db):
            db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        for row in db.execute("SELECT * FROM runs").fetchall():
            row = dict(row)
            try:
                row["run_key"] = (json.loads(row["config"]) or {}).get("key")
            except (TypeError, ValueError):
                continue
            db.execute("UPDATE runs SET run_key = ?, checksum = ? WHERE id = ?", (row["run_key"], _checksum(row), row["id"]))
        db.execute("COMMIT")

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
        row["run_key"] = (record.config or {}).get("key")
        for name in JSON_FIELDS:
            row[name] = json.dumps(row[name])
        row["checksum"] = _checksum(row)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", list(row.values()))
            db.execute("COMMIT")
            assert cursor.lastrowid is not None  # an INSERT sets it
            return cursor.lastrowid

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
        return [record for record in map(self._record, rows) if record is not None]

    def find(self, key: str) -> RunRecord | None:
        """The latest intact run whose configuration carries this content key (see ``runs.*_key``); a damaged
        one is passed over, so its stage runs again."""
        with self._connection() as db:
            rows = db.execute("SELECT * FROM runs WHERE run_key = ? ORDER BY id DESC", (key,)).fetchall()
        return next((record for record in map(self._record, rows) if record is not None), None)

    def _record(self, row: sqlite3.Row) -> RunRecord | None:
        """The run of a stored row; None, with a warning naming it (once), when the row is damaged."""
        data = dict(row)
        try:
            if data.pop("checksum") != _checksum(data):
                raise ValueError("its checksum does not match its cells")
            data.pop("run_key")
            for name in JSON_FIELDS:
                data[name] = json.loads(data[name]) if data[name] is not None else None
            return RunRecord(**data)
        except (TypeError, ValueError) as error:  # JSONDecodeError is a ValueError
            if data["id"] not in self._warned:
                self._warned.add(data["id"])
                warn(f"results store {self.path}: run #{data['id']} ({data.get('method')}, {data.get('created')}) is "
                     f"damaged ({error}) and left out; the command or study stage that made it stores it again when "
                     f"re-run")
            return None
