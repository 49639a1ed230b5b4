"""Default locations, each overridable by an environment variable or an option: the one home of each."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "TRANSFER_DATA"
CACHE_ENV = "TRANSFER_CACHE"
DATA_ROOT = Path("data")  # where `transfer data fetch` lays data sets out, one folder per name
DEFAULT_DATASET = "15scene"
REPORTS_DIR = Path("reports")  # reports go to a folder per report name under it
INSPECT_DIR = REPORTS_DIR / "inspect"
DATA_DEFAULT_TEXT = f"${DATA_ENV} or {DATA_ROOT / DEFAULT_DATASET}"  # what help texts say


def dataset_dir(name: str) -> Path:
    """Where a named data set is laid out when nothing else is said."""
    return DATA_ROOT / name


def default_data_dir(name: str = DEFAULT_DATASET) -> Path:
    """The data folder of a command or study that names none: $TRANSFER_DATA, else the named data set's folder."""
    return Path(os.environ.get(DATA_ENV) or dataset_dir(name))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "cache")


RESULTS_STORE = "results.sqlite"
ARTIFACT_FOLDERS = ("bow", "heads", "scratch", "models")


class CacheFolder:
    """The cache folder's layout, in one place: extraction files at the top (`features.cache.FeatureCache`),
    other artifacts in ``ARTIFACT_FOLDERS``, the results store beside them (not a cache: nothing here removes it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS_STORE

    def artifact(self, folder: str, name: str) -> Path:
        """Where a cached artifact named ``name`` lives (its folder is created on demand)."""
        assert folder in ARTIFACT_FOLDERS, folder
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        return self.root / folder / name
