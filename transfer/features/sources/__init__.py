"""Backbones from model libraries, by name: ``timm:convnext_tiny``, ``torchvision:resnet50``.

A library is one small module here: ``names()`` lists its models, ``describe(name)`` says what the library
knows of one (how to build it, its pretrained weights and preprocessing, where its classifier and stages
are) as a `LibraryModel`; `library_backbone` derives the rest from the built model's traced graph. Adding a
library is a module and a line in ``LIBRARIES``.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Protocol

from transfer.core.config import ConfigError
from transfer.core.errors import UserError
from transfer.features.backbones import BackboneSpec
from transfer.features.sources.library import LibraryModel, library_backbone

LIBRARIES = {
    "timm": ("transfer.features.sources.from_timm", "pip install 'transfer[timm]' (or pip install timm)"),
    "torchvision": ("transfer.features.sources.from_torchvision", "pip install torchvision"),
}
SEPARATOR = ":"


class Library(Protocol):
    def names(self) -> list[str]: ...

    def describe(self, name: str) -> LibraryModel: ...


def is_library_name(name: str) -> bool:
    return SEPARATOR in name


def _library(prefix: str) -> Library:
    if prefix not in LIBRARIES:
        raise ConfigError("backbone", f"unknown model library {prefix!r}: use one of {', '.join(LIBRARIES)} "
                                      f"(e.g. timm:resnet50, torchvision:resnet50)")
    module, install = LIBRARIES[prefix]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UserError(f"backbones from {prefix} need the library: {install} ({error})") from error


_SPECS: dict[str, BackboneSpec] = {}


def library_spec(name: str) -> BackboneSpec:
    """The backbone ``library:model`` (built once per process to read its graph)."""
    if name not in _SPECS:
        prefix, _, model = name.partition(SEPARATOR)
        library = _library(prefix)
        known = library.names()
        if model.split(".")[0] not in known:  # timm names may carry a weights tag: vit_small_patch16_224.dino
            close = difflib.get_close_matches(model, known, n=5)
            hint = f"; closest: {', '.join(f'{prefix}{SEPARATOR}{c}' for c in close)}" if close else ""
            raise ConfigError("backbone", f"{prefix} has no model {model!r}{hint} ({len(known)} models: "
                                          f"`transfer layers --backbone {prefix}:NAME` describes one)")
        _SPECS[name] = library_backbone(library.describe(model))
    return _SPECS[name]
