"""transfer: pretrained CNN features + classical classifiers, one study per command.

As a library: `transfer.load_features(...)`, `transfer.LinearProbe(...)`, `transfer.results(...)`
(`transfer.api`); they are imported on first use, so that importing the package stays light."""

from __future__ import annotations

from typing import Any

from transfer.core.version import __version__ as __version__

__all__ = ["LinearProbe", "load_features", "results"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from transfer import api

        return getattr(api, name)
    raise AttributeError(f"module 'transfer' has no attribute {name!r}")
