"""How configurations check themselves: every settings dataclass validates its own fields once, on
construction, and reports a broken rule as a `ConfigError` naming the field. The CLI prints the message;
the study checker maps the field to its key and line in the study file. No rule is written twice.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import TypeVar

from transfer.core.errors import UserError

E = TypeVar("E", bound=enum.Enum)


class ConfigError(UserError):
    """A setting that breaks a rule of its configuration, in the configuration's own terms."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def as_plain(config) -> dict:
    """A configuration as plain data (enums as their values), for files that are loaded without running code."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)


def choice(kind: type[E], value, field: str) -> E:
    """``value`` as a member of the closed vocabulary ``kind``; anything else names the choices."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ConfigError(field, f"{field} {value!r} is not one of: {choices}") from None
