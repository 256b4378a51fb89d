"""What a run can be scored on: the probes by name and kind, the objective metrics with
their direction (``OBJECTIVES``), and ``Objective``, one metric a search optimises, parsed
from a config's ``tune.objectives``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from monolith.errors import ConfigError

# The downstream probes (``monolith.evaluate``), by name. ``regime`` is the causal HMM state
# at the window's last bar; ``direction`` is the original label (close[t + data.label_horizon]
# > close[t]); ``direction_h<H>`` and ``fwd_vol_h<H>`` are the forward targets prepared for
# each H in data.direction_horizons and data.volatility_horizons; ``knn_views`` needs no label
# (a window's augmented view retrieving its other view).
PROBE_NAME = re.compile(r"^(regime|direction|knn_views|direction_h[1-9]\d*|fwd_vol_h[1-9]\d*)$")
PROBE_NAMES_HELP = "allowed: regime, direction, direction_h<H>, fwd_vol_h<H>, knn_views"
_PROBE_KINDS = {
    "regime": "classification",
    "direction": "classification",
    "direction_h": "classification",
    "fwd_vol_h": "regression",
    "knn_views": "retrieval",
}
# What ``eval.probes`` lists when a config says nothing: the regime, the original direction
# and the forward targets of the default data.direction_horizons / data.volatility_horizons.
DEFAULT_PROBES = ("regime", "direction", "direction_h1", "direction_h24", "fwd_vol_h24")


def probe_kind(name: str) -> str:
    """``classification``, ``regression`` or ``retrieval``: how probe ``name`` is scored."""
    if not isinstance(name, str) or not PROBE_NAME.match(name):
        raise ConfigError(f"unknown probe {name!r}; {PROBE_NAMES_HELP}")
    return _PROBE_KINDS.get(name) or _PROBE_KINDS[name.rstrip("0123456789")]


# Objectives beyond the probes' own metrics. Every objective is computed the same way for
# every trial (fixed reference temperature, augmentation and batch size; probes on fixed
# samples), so trials are comparable.
FIXED_OBJECTIVES = {"val_ref_ntxent": "min", "val_probe_mean_lift": "max"}
# A probe's metrics that can be an objective (all "max"): its score and its lifts. The
# baselines' own scores (``_random``, ``_raw``) are constants of a run, never objectives.
PROBE_OBJECTIVE_SUFFIXES = ("", "_lift", "_lift_vs_random", "_lift_vs_raw")


def objective_probe(name: str) -> str | None:
    """The probe a probe-metric objective names (``val_probe_fwd_vol_h24_lift`` ->
    ``fwd_vol_h24``), or None when ``name`` is not a probe's score or lift."""
    if not isinstance(name, str) or not name.startswith("val_probe_"):
        return None
    rest = name.removeprefix("val_probe_")
    # Longest suffix first: "_lift_vs_raw" before "_lift" before "".
    for suffix in sorted(PROBE_OBJECTIVE_SUFFIXES, key=len, reverse=True):
        probe = rest.removesuffix(suffix) if suffix else rest
        if rest.endswith(suffix) and PROBE_NAME.match(probe):
            return probe
    return None


class _Objectives(Mapping[str, str]):
    """Objective metric -> mode: ``min`` for the reference loss, ``max`` for probe scores and
    lifts. Iterating lists the reference loss, the mean lift and the default probes' lifts;
    any probe's score or lift is a key (``val_probe_<probe>``,
    ``val_probe_<probe>_lift[_vs_random|_vs_raw]``), and ``EvalConfig.validate`` requires
    that probe to be in ``eval.probes``.
    """

    def __getitem__(self, name: str) -> str:
        if name in FIXED_OBJECTIVES:
            return FIXED_OBJECTIVES[name]
        if objective_probe(name) is not None:
            return "max"
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from FIXED_OBJECTIVES
        for probe in DEFAULT_PROBES:
            yield f"val_probe_{probe}_lift"

    def __len__(self) -> int:
        return len(FIXED_OBJECTIVES) + len(DEFAULT_PROBES)


OBJECTIVES: Mapping[str, str] = _Objectives()


@dataclass(frozen=True)
class Objective:
    """One metric the search optimises, in its direction (``min`` or ``max``).

    ``metric`` is the per-epoch name (``val_ref_ntxent``); trials also report its running
    best over their epochs as ``best_<metric>``, which is what the search ranks.
    """

    metric: str
    mode: str

    @property
    def reported(self) -> str:
        return f"best_{self.metric}"

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.mode})"

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "mode": self.mode}


def parse_objectives(raw: Any, where: str = "tune.objectives") -> list[Objective]:
    """``raw`` as objectives: a list of ``"metric"``, ``"metric:mode"`` or ``{metric, mode}``.

    Each metric must be one of ``monolith.config.OBJECTIVES`` and keep its own direction
    (minimising a lift or maximising a loss is a typo, not a wish).
    """
    allowed = ", ".join(f"{m}:{d}" for m, d in OBJECTIVES.items())

    def bad(key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{key} = {value!r} is invalid: {why}; allowed: {allowed}")

    usage = "expected a non-empty list of 'metric', 'metric:mode' or {metric, mode}"
    if not isinstance(raw, list) or not raw:
        raise bad(where, raw, usage)
    out: list[Objective] = []
    for i, entry in enumerate(raw):
        key = f"{where}[{i}]"
        if isinstance(entry, str):
            metric, _, mode = entry.partition(":")
        elif isinstance(entry, dict) and set(entry) <= {"metric", "mode"} and "metric" in entry:
            metric, mode = entry["metric"], entry.get("mode") or ""
        else:
            raise bad(key, entry, usage)
        metric, mode = str(metric).strip(), str(mode).strip()
        if metric not in OBJECTIVES:
            raise bad(key, entry, f"unknown metric {metric!r}")
        if mode and mode != OBJECTIVES[metric]:
            raise bad(
                key, entry, f"{metric} is optimised in mode {OBJECTIVES[metric]!r}, not {mode!r}"
            )
        if any(o.metric == metric for o in out):
            raise bad(key, entry, f"{metric} is listed twice")
        out.append(Objective(metric, OBJECTIVES[metric]))
    return out
