"""Typed configuration: YAML in, validated dataclasses out.

A config is validated once, here, at the edge. Library code receives these objects, never
raw dicts. Every error names the key, the value given and what is allowed.

The 13 hyperparameters the original project tuned keep their flat names (``learning_rate``,
``dense_units``, ...). ``MonolithConfig.with_hyperparameters`` places a flat dict of them (a
tuning trial, a ``best_config.json``) onto the right section, so a tuned value always reaches
the model or the training loop.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from monolith.calendar_names import check_calendar
from monolith.errors import ConfigError

AUGMENTATIONS = ("jitter", "scaling", "time_masking")
SCALERS = ("standard", "robust", "minmax")

# The downstream probes (``monolith.evaluate``), by name. ``regime`` is the causal HMM state
# at the window's last bar; ``direction`` is the original label (close[t + data.label_horizon]
# > close[t]); ``direction_h<H>`` and ``fwd_vol_h<H>`` are the forward targets prepared for
# each H in data.direction_horizons and data.volatility_horizons; ``knn_views`` needs no label
# (a window's augmented view retrieving its other view).
_PROBE_NAME = re.compile(r"^(regime|direction|knn_views|direction_h[1-9]\d*|fwd_vol_h[1-9]\d*)$")
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
    if not isinstance(name, str) or not _PROBE_NAME.match(name):
        raise ConfigError(f"unknown probe {name!r}; {PROBE_NAMES_HELP}")
    return _PROBE_KINDS.get(name) or _PROBE_KINDS[name.rstrip("0123456789")]


# Objectives beyond the probes' own metrics. Every objective is computed the same way for
# every trial (fixed reference temperature, augmentation and batch size; probes on fixed
# samples), so trials are comparable.
_FIXED_OBJECTIVES = {"val_ref_ntxent": "min", "val_probe_mean_lift": "max"}
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
        if rest.endswith(suffix) and _PROBE_NAME.match(probe):
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
        if name in _FIXED_OBJECTIVES:
            return _FIXED_OBJECTIVES[name]
        if objective_probe(name) is not None:
            return "max"
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from _FIXED_OBJECTIVES
        for probe in DEFAULT_PROBES:
            yield f"val_probe_{probe}_lift"

    def __len__(self) -> int:
        return len(_FIXED_OBJECTIVES) + len(DEFAULT_PROBES)


OBJECTIVES: Mapping[str, str] = _Objectives()

# The original project's tuned hyperparameters, by flat name -> config section.
TUNED_HYPERPARAMETERS = {
    "learning_rate": "train",
    "dropout_rate": "model",
    "l2_reg": "model",
    "dense_units": "model",
    "lstm_units": "model",
    "transformer_blocks": "model",
    "transformer_heads": "model",
    "transformer_ff_dim_factor": "model",
    "batch_size": "train",
    "use_batch_norm": "model",
    "latent_dim": "model",
    "contrastive_temperature": "train",
    "augmentation_type": "train",
}
# What our model adds to the search space beyond the original 13.
EXTRA_HYPERPARAMETERS = {
    "sequence_length": "data",
    "reconstruction_weight": "train",
}


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


def _check_horizons(where: str, key: str, value: Any) -> None:
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


ADJUSTMENTS = ("auto", "none")


@dataclass
class SyntheticConfig:
    """The seeded multi-symbol generator (the embedded default dataset)."""

    symbols: int = 4
    rows_per_symbol: int = 3000
    seed: int = 7
    embedding_dim: int = 0  # 0 = no llm_embedding column
    mcp_features: int = 0  # 0 = no mcp_feature_* columns
    interval: str = "1h"

    def validate(self, where: str = "data.synthetic") -> None:
        check_int(where, "symbols", self.symbols, 1, 1000)
        check_int(where, "rows_per_symbol", self.rows_per_symbol, 100)
        check_int(where, "seed", self.seed, 0)
        check_int(where, "embedding_dim", self.embedding_dim, 0, 4096)
        check_int(where, "mcp_features", self.mcp_features, 0, 1000)


@dataclass
class DataConfig:
    """Where the data comes from and how it becomes windows."""

    # "synthetic"; a CSV/Parquet file, folder or glob, local or s3://bucket/prefix (hive
    # partitions allowed); or a prepared dataset (folder or s3:// prefix).
    source: str = "synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    sequence_length: int = 16  # L; 1 reproduces the original row mode
    label_horizon: int = 4  # H bars ahead for the `direction` probe target
    # Forward probe targets computed at preparation, per horizon H in bars: the sign of the
    # return from the next bar's open to the close H bars after t (probe ``direction_h<H>``)
    # and the realised volatility of bars t+1..t+H (``fwd_vol_h<H>``). Each uses bars after
    # t only; the split purge covers the longest horizon, so no train target reaches val.
    direction_horizons: list[int] = field(default_factory=lambda: [1, 24])
    volatility_horizons: list[int] = field(default_factory=lambda: [24])
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Windows never span a gap in the bar series longer than this many missing bars. A gap is
    # a bar missing while the symbol's market is open (monolith.data.calendars): nights,
    # weekends and holidays of a market that closes are not gaps.
    gap_tolerance_bars: int = 0
    # When each symbol's market trades: "auto" (decided per symbol from its bars), "24/7",
    # "fx", "weekdays" or an exchange calendar code (XNYS, XLON, XEUR, CMES, ...).
    calendar: str = "auto"
    calendars: dict[str, str] = field(default_factory=dict)  # per-symbol overrides
    # "auto": OHLC scaled by adjusted close / close where the file has an adjusted close
    # (volume inversely); "none": raw prices as published.
    adjust: str = "auto"
    scaler: str = "standard"
    hmm_states: int = 3
    hmm_seed: int = 0
    # The regime HMM is fitted on at most this many train rows (all of them below it; above
    # it, each symbol's proportional share in evenly spaced 1,000-bar chunks); None = all.
    hmm_fit_max_rows: int | None = 100_000
    # A bar whose high/low range exceeds this multiple of the symbol's median range is a
    # bad tick: it is dropped and counted in the cleaning report.
    bad_tick_range_multiple: float = 50.0
    atr_sl_multiple: float = 1.5
    atr_tp_multiple: float = 3.0

    def validate(self, where: str = "data") -> None:
        if not isinstance(self.source, str) or not self.source:
            raise fail(where, "source", self.source, "'synthetic', a path/glob or s3:// URI")
        if self.source != "synthetic":
            from monolith.uri import parse_uri

            parse_uri(self.source, f"{where}.source")
        self.synthetic.validate(f"{where}.synthetic")
        check_int(where, "sequence_length", self.sequence_length, 1, 4096)
        check_int(where, "label_horizon", self.label_horizon, 1, 1000)
        for key in ("direction_horizons", "volatility_horizons"):
            _check_horizons(where, key, getattr(self, key))
        check_float(where, "val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True)
        check_float(where, "test_fraction", self.test_fraction, 0.0, 0.5, lo_open=True)
        if self.val_fraction + self.test_fraction >= 0.8:
            raise fail(
                where,
                "val_fraction + test_fraction",
                self.val_fraction + self.test_fraction,
                "must be < 0.8 so that training keeps most rows",
            )
        check_int(where, "gap_tolerance_bars", self.gap_tolerance_bars, 0, 10_000)
        check_calendar(f"{where}.calendar", self.calendar)
        if not isinstance(self.calendars, dict):
            raise fail(where, "calendars", self.calendars, "a mapping {SYMBOL: CALENDAR}")
        for symbol, code in self.calendars.items():
            check_calendar(f"{where}.calendars[{symbol!r}]", code)
        check_choice(where, "adjust", self.adjust, ADJUSTMENTS)
        check_choice(where, "scaler", self.scaler, SCALERS)
        check_int(where, "hmm_states", self.hmm_states, 2, 10)
        check_int(where, "hmm_seed", self.hmm_seed, 0)
        if self.hmm_fit_max_rows is not None:
            check_int(where, "hmm_fit_max_rows", self.hmm_fit_max_rows, 1000)
        check_float(where, "bad_tick_range_multiple", self.bad_tick_range_multiple, 2.0, 1e6)
        check_float(where, "atr_sl_multiple", self.atr_sl_multiple, 0.0, 100.0, lo_open=True)
        check_float(where, "atr_tp_multiple", self.atr_tp_multiple, 0.0, 100.0, lo_open=True)

    def calendar_of(self, symbol: str) -> tuple[str, str]:
        """(calendar, the setting that chose it) for one symbol; synthetic bars never close."""
        if self.source == "synthetic":
            return "24/7", "data.source (synthetic)"
        if symbol in self.calendars:
            return self.calendars[symbol], "data.calendars"
        return self.calendar, "data.calendar"

    @property
    def target_horizons(self) -> dict[str, int]:
        """Every prepared forward target (a probe name) and its horizon in bars."""
        out = {"direction": self.label_horizon}
        out |= {f"direction_h{h}": h for h in self.direction_horizons}
        out |= {f"fwd_vol_h{h}": h for h in self.volatility_horizons}
        return out

    @property
    def probe_targets(self) -> tuple[str, ...]:
        """The label probes a dataset prepared from this config can run."""
        return ("regime", *self.target_horizons)

    @property
    def purge_bars(self) -> int:
        """Bars left out between consecutive splits: a window plus the longest target horizon
        (so the target of a split's last window never reaches the next split's bars)."""
        return self.sequence_length + max(self.target_horizons.values())


@dataclass
class ModelConfig:
    """Architecture of the MonolithModel."""

    dense_units: int = 32
    lstm_units: int = 64
    transformer_blocks: int = 3
    transformer_heads: int = 8
    transformer_ff_dim_factor: int = 2
    use_batch_norm: bool = True
    dropout_rate: float = 0.10263639892545441
    l2_reg: float = 7.224308701685084e-05
    latent_dim: int = 80
    projection_dim: int = 64
    instrument_embedding_dim: int = 8

    def validate(self, where: str = "model") -> None:
        check_int(where, "dense_units", self.dense_units, 1, 4096)
        check_int(where, "lstm_units", self.lstm_units, 1, 4096)
        check_int(where, "transformer_blocks", self.transformer_blocks, 0, 32)
        check_int(where, "transformer_heads", self.transformer_heads, 1, 64)
        check_int(where, "transformer_ff_dim_factor", self.transformer_ff_dim_factor, 1, 16)
        if not isinstance(self.use_batch_norm, bool):
            raise fail(where, "use_batch_norm", self.use_batch_norm, "expected true or false")
        check_float(where, "dropout_rate", self.dropout_rate, 0.0, 0.9)
        check_float(where, "l2_reg", self.l2_reg, 0.0, 1.0)
        check_int(where, "latent_dim", self.latent_dim, 1, 4096)
        check_int(where, "projection_dim", self.projection_dim, 1, 4096)
        check_int(where, "instrument_embedding_dim", self.instrument_embedding_dim, 1, 512)
        if self.transformer_blocks > 0 and self.lstm_units % self.transformer_heads != 0:
            raise ConfigError(
                f"{where}.transformer_heads = {self.transformer_heads} does not divide the "
                f"attention width {where}.lstm_units = {self.lstm_units}: choose heads that "
                f"divide it (e.g. {[h for h in (1, 2, 4, 8, 16) if self.lstm_units % h == 0]})"
            )


@dataclass
class TrainConfig:
    """The contrastive training loop.

    ``batch_size`` is the GLOBAL batch: the number of windows per optimizer step summed over
    all replicas (workers x local devices). Each replica gets ``batch_size // replicas``; the
    NT-Xent negatives are gathered over the whole global batch.
    """

    learning_rate: float = 0.0015562385502385044
    batch_size: int = 64
    epochs: int = 10
    contrastive_temperature: float = 0.055566784132156696
    # One augmentation name or several joined with "+" (composed in order).
    augmentation_type: str = "scaling"
    reconstruction_weight: float = 0.1
    early_stopping_patience: int = 3
    seed: int = 42
    # Cap on optimizer steps per epoch (None = one pass over the training windows).
    max_steps_per_epoch: int | None = None

    def validate(self, where: str = "train") -> None:
        check_float(where, "learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        check_int(where, "batch_size", self.batch_size, 2, 65536)
        check_int(where, "epochs", self.epochs, 1, 100_000)
        check_float(
            where, "contrastive_temperature", self.contrastive_temperature, 0.0, 10.0, lo_open=True
        )
        parts = str(self.augmentation_type).split("+")
        for part in parts:
            if part not in AUGMENTATIONS:
                raise fail(
                    where,
                    "augmentation_type",
                    self.augmentation_type,
                    f"allowed values {list(AUGMENTATIONS)} or several joined with '+'",
                )
        check_float(where, "reconstruction_weight", self.reconstruction_weight, 0.0, 100.0)
        check_int(where, "early_stopping_patience", self.early_stopping_patience, 0, 10_000)
        check_int(where, "seed", self.seed, 0)
        if self.max_steps_per_epoch is not None:
            check_int(where, "max_steps_per_epoch", self.max_steps_per_epoch, 1)


@dataclass
class EvalConfig:
    """Comparable evaluation: fixed reference settings shared by every trial."""

    reference_temperature: float = 0.1
    reference_augmentation: str = "jitter+time_masking"
    reference_batch_size: int = 256
    reference_seed: int = 1234
    objective: str = "val_ref_ntxent"
    # Windows of each evaluation split (val every epoch, test at the end): a fixed sample,
    # evenly spaced over the split's windows of every symbol, the same for every trial and
    # worker; None = every window (evaluation then grows with the data).
    max_windows: int | None = 2048
    # Windows the linear probes are fitted on (train) and scored on (from the val sample),
    # drawn evenly; None = all.
    probe_max_windows: int | None = 4000
    # The probes reported every epoch (names: PROBE_NAMES_HELP); each label probe needs its
    # target prepared (data.label_horizon, data.direction_horizons, data.volatility_horizons).
    # val_probe_mean_lift is the mean of these probes' lifts.
    probes: list[str] = field(default_factory=lambda: list(DEFAULT_PROBES))

    def validate(self, where: str = "eval") -> None:
        check_float(
            where, "reference_temperature", self.reference_temperature, 0.0, 10.0, lo_open=True
        )
        for part in str(self.reference_augmentation).split("+"):
            if part not in AUGMENTATIONS:
                raise fail(
                    where,
                    "reference_augmentation",
                    self.reference_augmentation,
                    f"allowed values {list(AUGMENTATIONS)} or several joined with '+'",
                )
        check_int(where, "reference_batch_size", self.reference_batch_size, 2, 65536)
        check_int(where, "reference_seed", self.reference_seed, 0)
        if self.max_windows is not None:
            check_int(where, "max_windows", self.max_windows, 10)
        if self.probe_max_windows is not None:
            check_int(where, "probe_max_windows", self.probe_max_windows, 10)
        if not isinstance(self.probes, (list, tuple)) or not self.probes:
            raise fail(
                where, "probes", self.probes, f"a non-empty list of probes; {PROBE_NAMES_HELP}"
            )
        for name in self.probes:
            if not isinstance(name, str) or not _PROBE_NAME.match(name):
                raise fail(
                    where, "probes", list(self.probes), f"{name!r} is unknown; {PROBE_NAMES_HELP}"
                )
        repeated = sorted({p for p in self.probes if list(self.probes).count(p) > 1})
        if repeated:
            raise fail(where, "probes", list(self.probes), f"{repeated} listed twice")
        if self.objective not in self.objectives():
            probe = objective_probe(self.objective)
            why = f"probe {probe!r} is not configured" if probe is not None else "unknown metric"
            raise fail(
                where,
                "objective",
                self.objective,
                f"{why}; allowed values {list(_FIXED_OBJECTIVES)} or "
                f"val_probe_<probe>[{'|'.join(s for s in PROBE_OBJECTIVE_SUFFIXES if s)}] for a "
                f"probe in {where}.probes = {list(self.probes)}",
            )

    def objectives(self) -> list[str]:
        """The objectives these probes allow: the reference loss, the mean lift, and each
        configured probe's score and lifts."""
        out = list(_FIXED_OBJECTIVES)
        for probe in self.probes:
            out += [f"val_probe_{probe}{suffix}" for suffix in PROBE_OBJECTIVE_SUFFIXES]
        return out

    def check_targets(self, data: DataConfig, where: str = "eval") -> None:
        """Every configured label probe is prepared by ``data`` (its target column exists)."""
        available = data.probe_targets
        for name in self.probes:
            if probe_kind(name) != "retrieval" and name not in available:
                kind = (
                    "direction_horizons"
                    if name.startswith("direction_h")
                    else "volatility_horizons"
                )
                horizon = name.rsplit("_h", 1)[-1]
                raise fail(
                    where,
                    "probes",
                    list(self.probes),
                    f"{name!r} needs {horizon} in data.{kind} = {getattr(data, kind)}; "
                    f"probes these data settings prepare: {[*available, 'knn_views']}",
                )

    @property
    def mode(self) -> str:
        return OBJECTIVES[self.objective]


@dataclass
class MonolithConfig:
    """The whole configuration of one training run (or one tuning trial)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Sections owned by later layers (tuning, cluster, storage) are kept verbatim here and
    # validated by their owners.
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> MonolithConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.eval.validate()
        self.eval.check_targets(self.data)
        return self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        extra = out.pop("extra")
        out.update(extra)
        return out

    def hyperparameters(self) -> dict[str, Any]:
        """The flat hyperparameters (the original's ``best_config.json`` format)."""
        out: dict[str, Any] = {}
        for name, section in {**TUNED_HYPERPARAMETERS, **EXTRA_HYPERPARAMETERS}.items():
            out[name] = getattr(getattr(self, section), name)
        return out

    def with_hyperparameters(self, flat: dict[str, Any]) -> MonolithConfig:
        """A validated copy with flat hyperparameters placed on their sections.

        Unknown names raise, so a misspelt key can never be silently ignored.
        """
        known = {**TUNED_HYPERPARAMETERS, **EXTRA_HYPERPARAMETERS}
        unknown = sorted(set(flat) - set(known))
        if unknown:
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        new = dataclasses.replace(
            self,
            data=dataclasses.replace(self.data),
            model=dataclasses.replace(self.model),
            train=dataclasses.replace(self.train),
            eval=dataclasses.replace(self.eval),
            extra=dict(self.extra),
        )
        for name, value in flat.items():
            section = getattr(new, known[name])
            current = getattr(section, name)
            # YAML/JSON/numpy values: coerce to the declared python type where lossless.
            if isinstance(current, bool):
                value = _as_bool(name, value)
            elif isinstance(current, int) and not isinstance(value, bool):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                elif hasattr(value, "item"):
                    value = value.item()
            elif isinstance(current, float) and hasattr(value, "item"):
                value = float(value.item())
            setattr(section, name, value)
        return new.validate()


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"hyperparameter {name} = {value!r} is invalid: expected true or false")


def build_section(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; "
            f"allowed under {where}: {sorted(names)}"
        )
    kwargs = {}
    for key, value in raw.items():
        sub = names[key].type
        if sub in ("SyntheticConfig",):
            value = build_section(SyntheticConfig, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
# Top-level sections owned by later layers; passed through to ``extra``.
_EXTRA_SECTIONS = ("tune", "cluster", "storage", "publish", "final")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> MonolithConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    unknown = sorted(set(raw) - set(_SECTIONS) - set(_EXTRA_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {unknown}; allowed: "
            f"{sorted([*_SECTIONS, *_EXTRA_SECTIONS])}"
        )
    try:
        parts = {name: build_section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    extra = {k: raw[k] for k in _EXTRA_SECTIONS if k in raw}
    cfg = MonolithConfig(**parts, extra=extra)
    try:
        return cfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> MonolithConfig:
    """Load and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(raw, source=str(path))


@dataclass(frozen=True)
class InputSpec:
    """Shapes of the model inputs, derived from a prepared dataset's metadata.

    A zero width means the branch is absent (its input is not created).
    """

    sequence_length: int
    n_technical: int
    n_instruments: int
    embedding_dim: int = 0
    mcp_dim: int = 0
    cot_dim: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InputSpec:
        return cls(**{f.name: int(raw[f.name]) for f in fields(cls) if f.name in raw})

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
