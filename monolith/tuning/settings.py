"""The tune job's settings: the config's ``tune:`` section with the command line's
overrides, and a config cut to the experiment's epochs."""

from __future__ import annotations

import dataclasses
from typing import Any

from monolith.config import MonolithConfig, TuneSettings


def tune_settings(cfg: MonolithConfig, **overrides: Any) -> TuneSettings:
    """The config's ``tune:`` section with command-line overrides applied, validated."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(cfg.tune, **given).validate()


def with_epochs(cfg: MonolithConfig, epochs: int) -> MonolithConfig:
    train = dataclasses.replace(cfg.train, epochs=epochs)
    return dataclasses.replace(cfg, train=train)
