"""Strict parsing of environment variables.

A typo in a deployment's environment must stop the process at start-up with a message
naming the variable, never fall back silently to a default.
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# DRF's throttle rates ("30/min"): DRF reads only the period's first letter, and a letter it
# does not know fails every throttled request (a KeyError, so a 500), not the start-up.
_RATE = re.compile(
    r"(?P<count>[0-9]+)/(?:s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days)"
)

_Number = TypeVar("_Number", int, float)


class Env:
    # The methods are named after the types they parse (env.str, env.int, ...): inside the
    # class those names are the methods, so the annotations spell the types builtins.<name>.
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: builtins.str) -> builtins.str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    @overload
    def str(self, name: builtins.str, default: builtins.str) -> builtins.str: ...
    @overload
    def str(self, name: builtins.str, default: None = None) -> builtins.str | None: ...
    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str | None:
        value = self.raw(name)
        return default if value is None else value

    def required(self, name: builtins.str, why: builtins.str) -> builtins.str:
        value = self.raw(name)
        if value is None:
            raise ImproperlyConfigured(f"{name} must be set: {why}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
        return self._bounded(name, number, minimum, maximum)

    def float(
        self,
        name: builtins.str,
        default: builtins.float,
        *,
        minimum: builtins.float | None = None,
        maximum: builtins.float | None = None,
    ) -> builtins.float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
        return self._bounded(name, number, minimum, maximum)

    def list(
        self, name: builtins.str, default: builtins.list[builtins.str] | None = None
    ) -> builtins.list[builtins.str]:
        value = self.raw(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(
        self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]
    ) -> builtins.str:
        value = self.raw(name)
        if value is None:
            return default
        if value not in choices:
            raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def network(
        self, name: builtins.str, value: builtins.str
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """One network of a list setting, e.g. ``10.0.0.0/8`` or ``127.0.0.1``."""
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {value!r} is not an IP network (e.g. 10.0.0.0/8 or 127.0.0.1)"
            ) from None

    def rate(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """A throttle rate in DRF's syntax: a positive count per s, min, hour or day."""
        value = self.raw(name)
        if value is None:
            value = default
        match = _RATE.fullmatch(value)
        if match is None or int(match["count"]) == 0:
            raise ImproperlyConfigured(
                f"{name}={value!r} must look like 30/min (a count per s, min, hour or day)"
            )
        return value

    @staticmethod
    def _bounded(
        name: builtins.str, number: _Number, minimum: _Number | None, maximum: _Number | None
    ) -> _Number:
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
        return number
