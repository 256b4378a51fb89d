"""The ``monolith`` command: data preparation, single-process training, bundle inspection.

Every ``MonolithError`` becomes one line on stderr and exit status 2; nothing half-written
is left behind (each writer is atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path

from monolith.config import MonolithConfig, load_config
from monolith.errors import ConfigError, MonolithError

log = logging.getLogger("monolith")


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
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        if out.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info(
        "wrote %s rows (%d symbols x %d, seed %d) to %s",
        f"{len(frame):,}", cfg.symbols, cfg.rows_per_symbol, cfg.seed, out,
    )
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from monolith.data.prepare import prepare_dataset

    cfg = _with_data_overrides(_config(args.config), args)
    meta = prepare_dataset(cfg.data, args.output, overwrite=args.overwrite)
    print(
        f"prepared {meta['rows']['prepared']:,} rows, {len(meta['instruments'])} symbols, "
        f"windows {meta['windows']} -> {args.output}"
    )
    return 0


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monolith",
        description="Monolith Tune: prepare market data, train and inspect MonolithModel bundles.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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
    prep.add_argument("--input", help="data source (overrides data.source); 'synthetic' allowed")
    prep.add_argument("--output", required=True, help="folder to write")
    prep.add_argument("--config", help="YAML config (data section used)")
    prep.add_argument("--sequence-length", type=int, help="window length L (overrides config)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing output")
    prep.set_defaults(func=cmd_data_prepare)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except MonolithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
