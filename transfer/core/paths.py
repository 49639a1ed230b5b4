"""Default locations, each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "TRANSFER_DATA"
CACHE_ENV = "TRANSFER_CACHE"


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, "data/15scene"))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "cache"))
