"""The tuning search space: YAML in, validated Optuna distributions out.

Each top-level key of ``search_space.yaml`` is a flat hyperparameter name (see
``config.TUNED_HYPERPARAMETERS`` / ``EXTRA_HYPERPARAMETERS``) mapped to one of

    {type: float, low: L, high: H, log: false|true}
    {type: int, low: L, high: H, step: S, log: false}
    {type: categorical, choices: [...]}

The space is checked once, before any cluster resource is requested: unknown names, empty or
inverted ranges, steps that do not fit, values the config itself would reject, and
combinations a sampler could draw that cannot be built (attention heads that do not divide
the LSTM width, global batches that do not split evenly over the trial's workers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna.distributions as od
import yaml

from monolith.config import EXTRA_HYPERPARAMETERS, TUNED_HYPERPARAMETERS, MonolithConfig
from monolith.errors import ConfigError

KNOWN = {**TUNED_HYPERPARAMETERS, **EXTRA_HYPERPARAMETERS}
_KEYS = {
    "float": {"type", "low", "high", "log"},
    "int": {"type", "low", "high", "step", "log"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class SearchSpace:
    """Validated distributions by flat hyperparameter name, in file order."""

    distributions: dict[str, od.BaseDistribution]
    source: str = "search space"

    @property
    def names(self) -> list[str]:
        return list(self.distributions)

    def values(self, name: str) -> list[Any] | None:
        """Every value ``name`` can take, when finite (ints and categoricals)."""
        dist = self.distributions[name]
        if isinstance(dist, od.CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, od.IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high + 1, dist.step))
        return None

    def contains(self, name: str, value: Any) -> bool:
        dist = self.distributions[name]
        if isinstance(dist, od.CategoricalDistribution):
            return value in dist.choices
        try:
            return dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            return False

    def check_point(self, point: dict[str, Any], what: str) -> dict[str, Any]:
        """``point`` restricted to this space's names; every value must lie inside it."""
        missing = [n for n in self.names if n not in point]
        if missing:
            raise ConfigError(f"{what} has no value for searched hyperparameter(s) {missing}")
        out = {n: point[n] for n in self.names}
        for name, value in out.items():
            if not self.contains(name, value):
                raise ConfigError(
                    f"{what}: {name} = {value!r} lies outside the search space "
                    f"({describe(self.distributions[name])}) in {self.source}"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {n: od.distribution_to_json(d) for n, d in self.distributions.items()}


def describe(dist: od.BaseDistribution) -> str:
    if isinstance(dist, od.CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    kind = "log-uniform" if getattr(dist, "log", False) else "uniform"
    step = f" step {dist.step}" if getattr(dist, "step", None) not in (None, 1) else ""
    return f"{kind} [{dist.low}, {dist.high}]{step}"


def _number(where: str, key: str, value: Any, integer: bool) -> int | float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}.{key} = {value!r} is invalid: expected {kind}")
    return value


def _distribution(name: str, spec: Any, where: str) -> od.BaseDistribution:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(
            f"{where} must be a mapping with a 'type' (float, int or categorical), got {spec!r}"
        )
    kind = spec["type"]
    if kind not in _KEYS:
        raise ConfigError(f"{where}.type = {kind!r} is invalid: allowed values {sorted(_KEYS)}")
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where} (type {kind}); allowed: {sorted(_KEYS[kind])}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices must be a non-empty list, got {choices!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}.choices {choices} repeats a value")
        return od.CategoricalDistribution(choices)
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}.{key} is missing")
    integer = kind == "int"
    low = _number(where, "low", spec["low"], integer)
    high = _number(where, "high", spec["high"], integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log = {log!r} is invalid: expected true or false")
    if low > high:
        raise ConfigError(f"{where}: empty range, low = {low} > high = {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log = true needs low > 0, got low = {low}")
    if not integer:
        if low == high:
            raise ConfigError(f"{where}: empty range, low = high = {low}; use categorical")
        return od.FloatDistribution(float(low), float(high), log=log)
    step = _number(where, "step", spec.get("step", 1), True)
    if step < 1:
        raise ConfigError(f"{where}.step = {step} is invalid: expected an integer >= 1")
    if log and step != 1:
        raise ConfigError(f"{where}: log = true cannot be combined with step = {step}")
    if (high - low) % step:
        raise ConfigError(
            f"{where}: range [{low}, {high}] is not a whole number of steps of {step}"
        )
    return od.IntDistribution(low, high, log=log, step=step)


def parse_search_space(raw: Any, source: str = "search space") -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: expected a mapping of hyperparameter -> distribution")
    unknown = sorted(set(raw) - set(KNOWN))
    if unknown:
        raise ConfigError(f"{source}: unknown hyperparameter(s) {unknown}; known: {sorted(KNOWN)}")
    dists = {name: _distribution(name, spec, f"{source}: {name}") for name, spec in raw.items()}
    return SearchSpace(dists, source)


def load_search_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_search_space(raw, str(path))


def _corner_values(space: SearchSpace, name: str) -> list[Any]:
    values = space.values(name)
    if values is not None:
        return values
    dist = space.distributions[name]
    return [dist.low, dist.high]


def check_against_config(space: SearchSpace, base: MonolithConfig, num_workers: int) -> None:
    """Every value the sampler can draw must build a valid config for ``num_workers``.

    Bounds of each parameter are checked alone (the config's own validation), then the
    pairs that constrain each other are checked over all their combinations.
    """
    hp = base.hyperparameters()
    for name in space.names:
        for value in _corner_values(space, name):
            try:
                base.with_hyperparameters({name: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"{space.source}: {name} can take {value!r}, which the config rejects: {exc}"
                ) from None

    def options(name: str) -> list[Any]:
        return _corner_values(space, name) if name in space.distributions else [hp[name]]

    blocks = options("transformer_blocks")
    if any(b > 0 for b in blocks):
        for units, heads in itertools.product(options("lstm_units"), options("transformer_heads")):
            if units % heads:
                raise ConfigError(
                    f"{space.source}: transformer_heads = {heads} does not divide "
                    f"lstm_units = {units}, and the sampler can draw both: narrow one of "
                    f"the two ranges (heads must divide the attention width)"
                )
    for batch in options("batch_size"):
        if batch % num_workers:
            raise ConfigError(
                f"{space.source}: batch_size = {batch} (the global batch) does not split evenly "
                f"over the trial's {num_workers} workers; use multiples of {num_workers}"
            )
        if batch // num_workers < 2:
            raise ConfigError(
                f"{space.source}: batch_size = {batch} gives fewer than 2 windows per worker "
                f"with {num_workers} workers"
            )
