"""The checks every config section uses: one error shape, ``<where>.<key> = <value> is
invalid: <what is allowed>``, and ``build_section``, which turns a YAML mapping into a
section's dataclass, refusing unknown keys by name."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from monolith.errors import ConfigError


def fail(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{where}.{key} = {value!r} is invalid: {allowed}")


def check_int(where: str, key: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(where, key, value, "expected an integer")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise fail(where, key, value, f"allowed range {rng}")


def check_float(
    where: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(where, key, value, "expected a finite number")
    if value < lo or value > hi or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise fail(where, key, value, f"allowed range {left}{lo}, {hi}]")


def check_horizons(where: str, key: str, value: Any) -> None:
    if not isinstance(value, (list, tuple)):
        raise fail(where, key, value, "expected a list of horizons in bars, e.g. [1, 24]")
    for horizon in value:
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 1000:
            raise fail(where, key, value, "each horizon an integer in [1, 1000]")
    if len(set(value)) != len(value):
        raise fail(where, key, value, "a horizon is listed twice")


def check_choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(where, key, value, f"allowed values {list(choices)}")


def build_section(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name; a field whose
    type is itself a dataclass (``data.synthetic``) is built the same way."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; "
            f"allowed under {where}: {sorted(names)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if dataclasses.is_dataclass(hints[key]):
            value = build_section(hints[key], value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)
