"""The ``monolith`` command: data preparation, training, bundle inspection, publish and pull,
and using an encoder (embed).

Every ``MonolithError`` becomes one line on stderr and exit status 2; nothing half-written
is left behind (each writer is atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monolith._atomic import atomic_file
from monolith.config import MonolithConfig, load_config
from monolith.errors import ConfigError, MonolithError

if TYPE_CHECKING:
    from monolith.storage import StorageSettings

log = logging.getLogger("monolith")


# The job layer's cluster versions of two commands, by command: (module, function).
_CLUSTER_COMMANDS = {
    "prepare": ("ray_jobs.prepare", "prepare_on_cluster"),
    "embed": ("ray_jobs.embed", "embed_on_cluster"),
}


def _on_cluster(address: str, command: str) -> Callable[..., Any]:
    """``command``'s cluster version, after joining the Ray cluster at ``address``.

    The one place the library's CLI reaches the job layer above it (``ray_jobs``), and only
    when a command is given ``--ray-address``: the library itself never needs Ray, so a
    command run in this process never imports it.
    """
    from ray_jobs._ray import connect

    module, name = _CLUSTER_COMMANDS[command]
    run = getattr(importlib.import_module(module), name)
    connect(address=address)
    return run


def _config(path: str | None) -> MonolithConfig:
    return load_config(path) if path else MonolithConfig().validate()


def _with_data_overrides(cfg: MonolithConfig, args: argparse.Namespace) -> MonolithConfig:
    data = cfg.data
    if getattr(args, "input", None):
        data = dataclasses.replace(data, source=args.input)
    if getattr(args, "sequence_length", None) is not None:
        data = dataclasses.replace(data, sequence_length=args.sequence_length)
    cfg = dataclasses.replace(cfg, data=data)
    try:
        cfg.data.validate()
    except ConfigError as exc:
        raise ConfigError(f"command-line override: {exc}") from None
    return cfg


# -- data ------------------------------------------------------------------------------------
def cmd_data_synth(args: argparse.Namespace) -> int:
    from monolith.data.synthetic import generate_synthetic

    cfg = _config(args.config).data.synthetic
    overrides = {
        "symbols": args.symbols,
        "rows_per_symbol": args.rows,
        "seed": args.seed,
        "embedding_dim": args.embedding_dim,
        "mcp_features": args.mcp_features,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg.validate("data.synthetic (command line)")
    out = Path(args.output)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"--output {out}: expected a .parquet or .csv file name")
    frame = generate_synthetic(cfg)
    with atomic_file(out) as tmp:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    log.info(
        "wrote %s rows (%d symbols x %d, seed %d) to %s",
        f"{len(frame):,}",
        cfg.symbols,
        cfg.rows_per_symbol,
        cfg.seed,
        out,
    )
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from monolith.data.prepare import prepare_dataset
    from monolith.data.readiness import prepare_summary
    from monolith.uri import normalise

    cfg = _with_data_overrides(_config(args.config), args)
    settings = _storage_settings(args)
    output = normalise(args.output, "--output")
    if args.ray_address:
        prepare_on_cluster = _on_cluster(args.ray_address, "prepare")
        meta = prepare_on_cluster(
            cfg.data,
            output,
            settings=settings,
            overwrite=args.overwrite,
            global_batch=cfg.train.batch_size,
        )
    else:
        meta = prepare_dataset(
            cfg.data,
            output,
            overwrite=args.overwrite,
            settings=settings,
            global_batch=cfg.train.batch_size,
        )
    print(
        f"prepared {meta['rows']['prepared']:,} rows, {len(meta['instruments'])} symbols, "
        f"windows {meta['windows']} -> {output}"
    )
    for line in prepare_summary(meta):
        print(f"  {line}")
    return 0


# -- train / inspect ---------------------------------------------------------------------------
def _fmt(value: object) -> str:
    return f"{value:+.4f}" if isinstance(value, float) else str(value)


def _print_metrics(metrics: dict, title: str) -> None:
    print(title)
    for key in sorted(metrics):
        print(f"  {key:<36} {_fmt(metrics[key])}")


def cmd_train(args: argparse.Namespace) -> int:
    from monolith.experiment import prepared_for
    from monolith.training import bundle_result, train_on_prepared

    cfg = load_config(args.config)
    if args.data:
        cfg = _with_data_overrides(cfg, argparse.Namespace(input=args.data))
    if args.epochs is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=args.epochs))
        cfg.train.validate("train (--epochs)")
    output = Path(args.output or Path("runs") / "bundles" / Path(args.config).stem)
    if output.exists() and not args.overwrite:
        raise MonolithError(f"bundle {output} already exists; pass --overwrite to replace it")
    settings = _storage_settings(args)
    prepared = prepared_for(cfg, Path(args.data_cache), settings)
    result = train_on_prepared(cfg, prepared, settings=settings)
    bundle_result(result, cfg, prepared, output, overwrite=args.overwrite, settings=settings)
    best = result.best_epoch
    print(f"trained {len(result.rows)} epoch(s); best epoch {best}; bundle -> {output}")
    _print_metrics(
        {k: v for k, v in result.metrics.items() if k != "epoch"},
        f"validation metrics (best epoch {best}):",
    )
    _print_metrics(result.test_metrics, "held-out test metrics:")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if _is_published(args.bundle):
        from monolith.bundle import pull_bundle

        # A remote bundle (or a ``latest`` pointer) is pulled and verified in a temporary folder.
        with tempfile.TemporaryDirectory(prefix="monolith-inspect-") as tmp:
            local = pull_bundle(args.bundle, Path(tmp) / "bundle", _storage_settings(args))
            return _inspect(local, args.bundle)
    return _inspect(args.bundle, args.bundle)


def _inspect(bundle: str | Path, label: str) -> int:
    from monolith.bundle import load_bundle_model, verify_bundle

    manifest = verify_bundle(bundle)
    model = load_bundle_model(bundle, verify=False)
    config = manifest.get("config", {})
    print(f"bundle {label}: {len(manifest['files'])} files verified (sha256 + size)")
    print(f"  created  {manifest.get('created_utc')}")
    print(
        f"  model    {model.name}: {model.count_params():,} parameters, inputs "
        f"{[t.name for t in model.inputs]}, loaded with safe_mode=True"
    )
    print(f"  spec     {config.get('input_spec')}")
    print(f"  versions {manifest.get('versions')}")
    hp = config.get("hyperparameters", {})
    print("hyperparameters:")
    for key in sorted(hp):
        print(f"  {key:<36} {hp[key]}")
    metrics = manifest.get("metrics", {})
    _print_metrics({k: v for k, v in metrics.items() if k != "epoch"}, "metrics:")
    lifts = {k: v for k, v in metrics.items() if "lift" in k}
    if lifts:
        _print_metrics(lifts, "probe lifts (trained encoder minus baseline, balanced accuracy):")
    return 0


# -- embed -------------------------------------------------------------------------------------
def cmd_embed(args: argparse.Namespace) -> int:
    from monolith.encoder import Encoder
    from monolith.uri import normalise

    settings = _storage_settings(args)
    output = normalise(args.output, "--output")
    if not output.endswith(".parquet"):
        raise ConfigError(f"--output {args.output}: expected a .parquet file name")
    if args.max_drift is not None and not args.max_drift > 0:
        raise ConfigError(f"--max-drift {args.max_drift}: expected a positive number (a PSI)")
    unknown = "skip" if args.skip_unknown else "error"
    encoder = Encoder.load(args.bundle, settings)
    if args.ray_address:
        embed_on_cluster = _on_cluster(args.ray_address, "embed")
        frame, report, scaled = embed_on_cluster(
            args.bundle,
            args.input,
            known=set(encoder.instruments),
            settings=settings,
            unknown=unknown,
            batch_size=args.batch_size,
        )
    else:
        frame = encoder.embed(
            args.input, settings=settings, unknown=unknown, batch_size=args.batch_size
        )
        report, scaled = encoder.last_report.to_dict(), encoder.last_scaled
    drift = encoder.drift(scaled) if encoder.reference is not None else None
    write_embeddings(frame, output, settings, {"embed": report, "drift": drift})
    print(
        f"embedded {len(frame):,} windows of {frame['symbol'].nunique()} symbol(s) "
        f"({report['rows_without_window']:,} bar(s) could not end a full window"
        f"{'; skipped symbols ' + str(report['skipped_symbols']) if report['skipped_symbols'] else ''}) "
        f"-> {output}"
    )
    outside = report.get("bars_outside_calendar") or {}
    if outside:
        print(
            f"warning: bars outside the calendar recorded at training: {outside} (sessions or "
            "hours the market did not trade then): check the data or the bundle's calendars"
        )
    if drift is None:
        print("drift: not checked (the bundle records no drift reference)")
        return 0
    print(
        f"drift: score {drift['drift_score']:.3f} (largest PSI: {drift['worst_feature']}), "
        f"mean PSI {drift['mean_psi']:.3f}, {100 * drift['outside_train_range']:.1f}% of values "
        f"outside the train range -> {output}.drift.json"
    )
    if args.max_drift is not None and drift["drift_score"] > args.max_drift:
        print(
            f"error: drift score {drift['drift_score']:.3f} exceeds --max-drift "
            f"{args.max_drift:g} (feature {drift['worst_feature']}): the new data no longer looks "
            "like the data the encoder was trained on",
            file=sys.stderr,
        )
        return 2
    return 0


def write_embeddings(frame, output: str, settings: StorageSettings, report: dict) -> None:
    """The embeddings (Parquet) and the report beside them (``<output>.drift.json``), each
    written whole or not at all: a local file via a renamed temporary, an S3 object in one put."""
    import io
    import json

    from monolith.storage import write_bytes

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(output, buffer.getvalue(), settings)
    write_bytes(
        f"{output}.drift.json",
        (json.dumps(report, indent=2, default=str) + "\n").encode(),
        settings,
    )


# -- publish / pull ----------------------------------------------------------------------------
def _storage_settings(args: argparse.Namespace) -> StorageSettings:
    from monolith.storage import StorageSettings

    if getattr(args, "config", None):
        return StorageSettings.from_config(_config(args.config))
    return StorageSettings()


def _is_published(where: str) -> bool:
    """An s3:// URI, or a ``<root>/<experiment>/latest`` pointer rather than a bundle folder."""
    from monolith.bundle.schema import LATEST_FILE, MANIFEST_FILE
    from monolith.uri import is_s3_uri

    path = Path(where)
    latest = path.name in ("latest", LATEST_FILE) and not (path / MANIFEST_FILE).is_file()
    return is_s3_uri(where) or latest


def cmd_publish(args: argparse.Namespace) -> int:
    from monolith.bundle import publish_bundle

    uri = publish_bundle(
        args.bundle,
        args.dest,
        args.experiment,
        args.run_id,
        _storage_settings(args),
        create_bucket=args.create_bucket,
        overwrite=args.overwrite,
    )
    print(f"published {args.bundle} -> {uri} (verified; latest for experiment {args.experiment})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from monolith.bundle import promote_bundle

    uri = promote_bundle(args.dest, args.experiment, args.run_id, _storage_settings(args))
    print(f"promoted {uri}: {args.dest}/{args.experiment}/latest.json now points at it (verified)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from monolith.bundle import pull_bundle, read_manifest

    dest = pull_bundle(args.uri, args.dest, _storage_settings(args), overwrite=args.overwrite)
    files = len(read_manifest(dest)["files"]) + 1
    print(f"pulled {args.uri} -> {dest}: {files} files verified (sha256 + size)")
    return 0


# -- report ----------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from monolith.report import build_report

    settings = _storage_settings(args) if args.config else None
    out = build_report(args.experiment, args.output, settings)
    print(f"wrote the report of {args.experiment} -> {out}")
    return 0


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monolith",
        description="Monolith Tune: prepare market data, train, inspect, publish and pull "
        "MonolithModel bundles.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_train_commands(sub)
    _add_embed_command(sub)
    _add_bundle_commands(sub)
    _add_report_command(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """``monolith data synth`` and ``monolith data prepare``."""
    data = sub.add_parser("data", help="prepare datasets").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="write a seeded synthetic multi-symbol OHLCV file")
    synth.add_argument("--output", required=True, help="a .parquet or .csv file")
    synth.add_argument("--config", help="YAML config whose data.synthetic section to use")
    synth.add_argument("--symbols", type=int)
    synth.add_argument("--rows", type=int, help="rows per symbol")
    synth.add_argument("--seed", type=int)
    synth.add_argument("--embedding-dim", type=int, help="width of llm_embedding (0 = none)")
    synth.add_argument("--mcp-features", type=int, help="number of mcp_feature_* columns")
    synth.set_defaults(func=cmd_data_synth)

    prep = data.add_parser(
        "prepare",
        help="files -> cleaned, featured, split and scaled dataset folder",
        description="Read CSV/Parquet (a file, folder or glob) or generate synthetic data, "
        "clean it (counted in the report), compute TA-Lib indicators and HMM regimes, split "
        "per symbol with purge gaps, fit scalers on train rows, and write a prepared dataset "
        "folder (Parquet per symbol, scalers.pkl/json, data_processing_metadata.json).",
    )
    prep.add_argument(
        "--input",
        help="data source (overrides data.source): a file, folder or glob, local or s3://; "
        "'synthetic' allowed",
    )
    prep.add_argument("--output", required=True, help="folder or s3://bucket/prefix to write")
    prep.add_argument("--config", help="YAML config (data and storage sections used)")
    prep.add_argument(
        "--ray-address",
        help="spread the per-symbol work over this Ray cluster ('auto' on a cluster node, "
        "host:port of its GCS, or ray://host:10001); default: this process",
    )
    prep.add_argument("--sequence-length", type=int, help="window length L (overrides config)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing output")
    prep.set_defaults(func=cmd_data_prepare)


def _add_train_commands(sub: Any) -> None:
    """``monolith train`` and ``monolith inspect``."""
    train = sub.add_parser(
        "train",
        help="train one config in this process and write a verified bundle",
        description="Prepare (or reuse) the config's dataset, train the MonolithModel with the "
        "contrastive custom loop, evaluate on val (every epoch) and test, and write the "
        "artifact bundle atomically.",
    )
    train.add_argument("--config", required=True, help="YAML config, e.g. configs/seed_best.yaml")
    train.add_argument(
        "--data", help="data source or prepared dataset folder (overrides data.source)"
    )
    train.add_argument("--output", help="bundle folder (default runs/bundles/<config name>)")
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument(
        "--data-cache",
        default="runs/cache/data",
        help="where prepared datasets are cached (default runs/cache/data)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    train.set_defaults(func=cmd_train, tensorflow=True)

    inspect = sub.add_parser(
        "inspect",
        help="verify a bundle's checksums, load its model safely, print its metrics",
    )
    inspect.add_argument(
        "bundle", help="bundle folder, s3:// bundle URI, or <root>/<experiment>/latest"
    )
    inspect.add_argument("--config", help="YAML config whose storage section to use")
    inspect.set_defaults(func=cmd_inspect, tensorflow=True)


def _add_embed_command(sub: Any) -> None:
    """``monolith embed``: an encoder over new bars, and the drift check."""
    embed = sub.add_parser(
        "embed",
        help="embeddings of new bars with a published encoder, and a drift check",
        description="Run BUNDLE's own pipeline (cleaning, causal features, its train-fitted "
        "scalers, instrument map, regime HMM, window length) over SRC and write one row per "
        "window end (timestamp, symbol, latent_000..., hmm_regime) to OUT.parquet, plus a "
        "report beside it (OUT.parquet.drift.json): rows that could not end a window, and how "
        "far the new data drifts from the training data (PSI, KS, share outside the train "
        "range per feature).",
    )
    embed.add_argument("bundle", help="bundle folder, s3://…/<run_id>, or …/<experiment>/latest")
    embed.add_argument(
        "--input",
        required=True,
        help="bars: a file, folder, glob or s3:// source in any layout `data prepare` reads, "
        "or a prepared dataset",
    )
    embed.add_argument("--output", required=True, help="a .parquet file, local or s3://")
    embed.add_argument("--batch-size", type=int, default=1024, help="windows per forward pass")
    embed.add_argument(
        "--ray-address",
        help="embed on this Ray cluster with Ray Data (one block per symbol, an actor pool "
        "that loads the model once per actor); default: this process",
    )
    embed.add_argument(
        "--skip-unknown",
        action="store_true",
        help="leave out (and report) symbols the encoder was not trained on, instead of failing",
    )
    embed.add_argument(
        "--max-drift",
        type=float,
        help="exit 2 when the drift score (the largest PSI over features) exceeds this",
    )
    embed.add_argument("--config", help="YAML config whose storage section to use")
    embed.set_defaults(func=cmd_embed, tensorflow=True)


def _add_bundle_commands(sub: Any) -> None:
    """``monolith publish``, ``promote`` and ``pull``: bundles to and from storage."""
    publish = sub.add_parser(
        "publish",
        help="upload a bundle to S3-compatible storage (or a folder), verify it, mark it latest",
        description="Upload BUNDLE to DEST/<experiment>/<run-id>/ (multipart for large files), "
        "check every object's SHA-256 against the manifest, and only then point "
        "DEST/<experiment>/latest.json at it. Re-running with the same run id is a no-op. "
        "Credentials come from the standard AWS chain (environment, profile, web identity).",
    )
    publish.add_argument("bundle", help="bundle folder")
    publish.add_argument("dest", help="s3://bucket/prefix, or a local folder")
    publish.add_argument("--experiment", required=True, help="experiment name (a path segment)")
    publish.add_argument("--run-id", required=True, help="run id (a path segment)")
    publish.add_argument("--config", help="YAML config whose storage section to use")
    publish.add_argument(
        "--create-bucket", action="store_true", help="create the bucket if it does not exist"
    )
    publish.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different bundle already published under this run id",
    )
    publish.set_defaults(func=cmd_publish)

    promote = sub.add_parser(
        "promote",
        help="mark an already published run as latest (after verifying it)",
        description="Pull DEST/<experiment>/<run-id>/, verify every file against its manifest, "
        "then point DEST/<experiment>/latest.json at it (a gate after `train_final --no-latest`).",
    )
    promote.add_argument("dest", help="s3://bucket/prefix, or a local folder")
    promote.add_argument("--experiment", required=True, help="experiment name (a path segment)")
    promote.add_argument("--run-id", required=True, help="run id (a path segment)")
    promote.add_argument("--config", help="YAML config whose storage section to use")
    promote.set_defaults(func=cmd_promote)

    pull = sub.add_parser(
        "pull",
        help="download a published bundle (or latest), verify it, place it atomically",
        description="Download URI into a temporary folder next to DEST, verify every file "
        "against the manifest (and the manifest against latest.json), then rename it to DEST. "
        "A bundle that fails verification leaves nothing behind.",
    )
    pull.add_argument(
        "uri",
        help="s3://bucket/prefix/<experiment>/<run_id>, .../<experiment>/latest, or a local "
        "published folder",
    )
    pull.add_argument("dest", help="bundle folder to create")
    pull.add_argument("--config", help="YAML config whose storage section to use")
    pull.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    pull.set_defaults(func=cmd_pull)


def _add_report_command(sub: Any) -> None:
    """``monolith report``: an experiment's results as one HTML page."""
    report = sub.add_parser(
        "report",
        help="write an experiment's report: one self-contained HTML page",
        description="Read EXPERIMENT's results (trials.csv, and when present summary.json, "
        "history.csv, optuna.db, pareto.csv, lineage.json) and write one HTML page that opens "
        "offline: summary, optimisation history, learning curves with ASHA stops, parameter "
        "importances, parallel coordinates, Pareto front, probe lifts, lineage, trials.",
    )
    report.add_argument(
        "experiment",
        help="experiment folder (holding results/) or its results folder, local or s3://",
    )
    report.add_argument("--output", help="HTML file to write (default <results>/report.html)")
    report.add_argument("--config", help="YAML config whose storage section to use (s3://)")
    report.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if getattr(args, "tensorflow", False):
            from monolith.tf_startup import start_tensorflow

            start_tensorflow()  # without TensorFlow's C++ start-up lines on the console
        return int(args.func(args) or 0)
    except MonolithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ray = sys.modules.get("ray")  # only when a command joined a cluster
        if ray is not None and ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
