"""The one door to a backbone by name: the named entries (`backbones.BACKBONES`) or any model of a library
(``timm:NAME``, ``torchvision:NAME``, `sources`)."""

from __future__ import annotations

import difflib

from transfer.core.config import ConfigError
from transfer.features.backbones import BACKBONES, BackboneSpec
from transfer.features.sources import LIBRARIES, SEPARATOR, is_library_name, library_spec

NAMES_HELP = ", ".join([*BACKBONES, *(f"{library}{SEPARATOR}NAME" for library in LIBRARIES)])


def get_backbone(name: str) -> BackboneSpec:
    if is_library_name(name):
        return library_spec(name)
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, list(BACKBONES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError("backbone", f"unknown backbone {name!r}{hint}; choose one of: {NAMES_HELP} "
                                      f"(e.g. timm:resnet50, torchvision:resnet50)")
    return BACKBONES[name]
