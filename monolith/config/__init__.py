"""Typed configuration: YAML in, validated dataclasses out.

A config is validated once, here, at the edge. Library code receives these objects, never
raw dicts. Every error names the key, the value given and what is allowed.

The 13 hyperparameters the original project tuned keep their flat names (``learning_rate``,
``dense_units``, ...). ``MonolithConfig.with_hyperparameters`` places a flat dict of them (a
tuning trial, a ``best_config.json``) onto the right section, so a tuned value always reaches
the model or the training loop.

The sections live in their own modules (``sections``: data, model, train, eval; ``jobs``:
tune, final; ``objectives``: probes and objective metrics; ``checks``: the shared checks);
this package's top names what the rest of the code imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from monolith.config.checks import (
    build_section,
    check_choice,
    check_float,
    check_horizons,
    check_int,
    fail,
)
from monolith.config.jobs import (
    MULTI_OBJECTIVE_STOPPING,
    FinalSettings,
    TuneSettings,
    WorkerResources,
)
from monolith.config.objectives import (
    DEFAULT_PROBES,
    OBJECTIVES,
    PROBE_NAMES_HELP,
    PROBE_OBJECTIVE_SUFFIXES,
    Objective,
    objective_probe,
    parse_objectives,
    probe_kind,
)
from monolith.config.sections import (
    ADJUSTMENTS,
    AUGMENTATIONS,
    SCALERS,
    DataConfig,
    EvalConfig,
    ModelConfig,
    SyntheticConfig,
    TrainConfig,
)
from monolith.errors import ConfigError

__all__ = [
    "ADJUSTMENTS",
    "AUGMENTATIONS",
    "DEFAULT_PROBES",
    "EXTRA_HYPERPARAMETERS",
    "MULTI_OBJECTIVE_STOPPING",
    "OBJECTIVES",
    "PROBE_NAMES_HELP",
    "PROBE_OBJECTIVE_SUFFIXES",
    "SCALERS",
    "TUNED_HYPERPARAMETERS",
    "DataConfig",
    "EvalConfig",
    "FinalSettings",
    "InputSpec",
    "ModelConfig",
    "MonolithConfig",
    "Objective",
    "SyntheticConfig",
    "TrainConfig",
    "TuneSettings",
    "WorkerResources",
    "build_section",
    "check_choice",
    "check_float",
    "check_horizons",
    "check_int",
    "config_from_dict",
    "fail",
    "load_config",
    "objective_probe",
    "parse_objectives",
    "probe_kind",
]

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


@dataclass
class MonolithConfig:
    """The whole configuration of one training run (or one tuning trial)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneSettings = field(default_factory=TuneSettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    # The S3 settings (endpoint, region, ...), kept as written: ``StorageSettings`` (the
    # storage layer's type, which this module does not import) validates them on use.
    storage: dict[str, Any] = field(default_factory=dict)
    # Accepted so configs that carry them load; nothing reads them yet.
    cluster: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> MonolithConfig:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.eval.validate()
        self.eval.check_targets(self.data)
        self.tune.validate()
        self.final.validate()
        for name in _RAW_SECTIONS:
            if not isinstance(getattr(self, name), dict):
                value = getattr(self, name)
                raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
            tune=dataclasses.replace(self.tune),
            final=dataclasses.replace(self.final),
            storage=dict(self.storage),
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


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "tune": TuneSettings,
    "final": FinalSettings,
}
# Top-level sections kept as written (a mapping; null = empty).
_RAW_SECTIONS = ("storage", "cluster", "publish")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> MonolithConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    unknown = sorted(set(raw) - set(_SECTIONS) - set(_RAW_SECTIONS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {unknown}; allowed: "
            f"{sorted([*_SECTIONS, *_RAW_SECTIONS])}"
        )
    try:
        parts = {name: build_section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()}
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    kept = {name: raw.get(name) or {} for name in _RAW_SECTIONS}
    cfg = MonolithConfig(**parts, **kept)
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
