"""What a tune experiment will do, validated before any cluster resource is requested: the
config and its tune: section with the command line's overrides, the objectives, the search
space, the warm start, the storage (new or resumed) and the data."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monolith.config import MonolithConfig, load_config
from monolith.errors import ConfigError
from monolith.experiment import TUNE_DIR
from monolith.search_space import SearchSpace, check_against_config, load_search_space
from monolith.tuning import Objective, TuneSettings, tune_settings, with_epochs
from monolith.uri import is_s3_uri, join, normalise, parse_s3_uri


@dataclass
class Plan:
    """Everything validated before any cluster resource is requested."""

    cfg: MonolithConfig
    settings: TuneSettings
    space: SearchSpace
    warm_start: dict[str, Any] | None
    root: str  # <storage>/<name>
    storage: dict[str, Any]  # the config's storage: section (endpoint, region, ...)
    objectives: list[Objective]  # primary first; the primary is cfg.eval.objective
    resume: bool = False

    @property
    def metric(self) -> str:
        return self.objectives[0].reported

    @property
    def mode(self) -> str:
        return self.objectives[0].mode

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def epochs(self) -> int:
        return self.cfg.train.epochs


def _warm_start(settings: TuneSettings, cfg: MonolithConfig, space: SearchSpace):
    choice = settings.warm_start
    if choice == "none":
        return None
    if choice == "base":
        point, what = cfg.hyperparameters(), "the base config (tune.warm_start: base)"
    else:
        path = Path(choice)
        if not path.is_file():
            raise ConfigError(f"tune.warm_start = {choice!r}: file not found")
        if path.suffix == ".json":
            flat = json.loads(path.read_text())
            point = cfg.with_hyperparameters(flat).hyperparameters()
        else:
            point = load_config(path).hyperparameters()
        what = f"warm start {path}"
    return space.check_point(point, what)


def plan(args: argparse.Namespace) -> Plan:
    cfg = load_config(args.config)
    if getattr(args, "data_source", None):
        cfg.data.source = args.data_source
    settings = tune_settings(
        cfg,
        name=args.name,
        num_samples=args.num_samples,
        storage=args.storage,
        search_space=args.search_space,
    )
    objectives = settings.objectives_for(cfg)
    if objectives[0].metric != cfg.eval.objective:
        # The primary objective is the trials' own: their early stopping and best checkpoint
        # follow it, and their workers report its running best (what ASHA ranks).
        cfg = dataclasses.replace(
            cfg, eval=dataclasses.replace(cfg.eval, objective=objectives[0].metric)
        )
    cfg = with_epochs(cfg, settings.epochs(cfg)).validate()
    reported = cfg.eval.objectives()
    for i, objective in enumerate(objectives):
        if objective.metric not in reported:  # a probe not in eval.probes is never reported
            raise ConfigError(
                f"tune.objectives[{i}] = {objective.metric!r} is not reported by the trials: "
                f"its probe is not in eval.probes = {list(cfg.eval.probes)}"
            )
    from monolith.bundle.schema import check_segment

    check_segment("tune.name (--name)", settings.name)  # a path segment of published bundles
    space = load_search_space(settings.search_space)
    check_against_config(space, cfg, settings.num_workers)
    if "sequence_length" in space.names:
        longest = max(space.values("sequence_length") or [cfg.data.sequence_length])
        cfg.data.sequence_length = max(cfg.data.sequence_length, int(longest))
    warm = _warm_start(settings, cfg, space)
    storage = dict(cfg.storage)
    from monolith.storage import StorageSettings

    store = StorageSettings.from_mapping(storage)
    # One parse of the storage URI (local storage made absolute: trial workers run in their
    # own working directories); a bad one is an error here, before Ray starts.
    storage_root = normalise(settings.storage, "tune.storage (--storage)")
    root = join(storage_root, settings.name)
    resume = _check_storage(root, storage, args.resume, args.auto_resume)
    _check_data(cfg, store, _smallest_batch(space, cfg))
    return Plan(cfg, settings, space, warm, root, storage, objectives, resume)


def _check_storage(root: str, storage: dict, resume: bool, auto_resume: bool) -> bool:
    """Storage is reachable, and the experiment exists exactly when resuming; returns
    whether to resume."""
    tune_dir = join(root, TUNE_DIR)
    if is_s3_uri(root):
        from monolith import storage as s3

        settings = s3.StorageSettings.from_mapping(storage)
        s3.check_access(root, settings)
        bucket, key = parse_s3_uri(tune_dir)
        listed = s3.s3_client(settings).list_objects_v2(
            Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1
        )
        exists = bool(listed.get("KeyCount"))
    else:
        exists = Path(tune_dir).exists()
    if auto_resume:
        return exists
    if resume and not exists:
        raise ConfigError(f"--resume: no experiment to resume at {tune_dir}")
    if exists and not resume:
        raise ConfigError(
            f"experiment {root} already exists: pass --resume to continue it, or choose a new "
            "--name"
        )
    return resume


def _check_data(cfg: MonolithConfig, store: Any, batch: int) -> None:
    """The data source names data we can reach (bucket, credentials, matching files), and
    prepares into at least one global batch of the smallest ``batch`` per split."""
    from monolith.data.precheck import check_can_train

    check_can_train(cfg.data, batch, store)


def _smallest_batch(space: Any, cfg: MonolithConfig) -> int:
    """The smallest global batch a trial can draw (the search space's, else the config's)."""
    if "batch_size" not in space.names:
        return cfg.train.batch_size
    values = space.values("batch_size")
    return int(min(values) if values else space.distributions["batch_size"].low)
