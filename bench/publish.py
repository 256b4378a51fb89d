"""Benchmark: bundle publishing throughput (MB/s) against plain boto3 uploads of the same files.

One moto S3 server (``python -m moto.server``, started here, HTTP on 127.0.0.1) and one
synthetic bundle: the six required files, the model file filled with ``--size-mb`` MiB of
random bytes, and its manifest. Each round measures:

1. this: ``publish_bundle`` to a fresh run id: preflight, every file read once and sent with
   SHA-256 checksums (per part) and sha256 metadata, its manifest SHA-256 checked on the same
   bytes, every object verified against the server's checksum, the listing checked,
   ``latest.json`` written;
2. the baseline: a default boto3 client's ``upload_file`` of the same seven files, one after
   the other, to the same server with the same TransferConfig (part size, concurrency),
   nothing checked;
3. a second reference: the same plain uploads with ``ChecksumAlgorithm="SHA256"``, so the
   cost of SHA-256 checksums as such (client and server side) is told apart from ours.

The three rotate which goes first each round; objects are deleted after each measurement
(moto keeps them in memory). Each reports its median round. Target on the 2-core reference
machine: this / baseline >= 0.9x. moto is CPU-bound and shares those two cores with the
client, so every byte hashed on either side shows here; against a network-bound store the
local hashing overlaps the transfer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as `python bench/publish.py` from anywhere

TARGET = 0.9
BUCKET = "bench"


def synthetic_bundle(folder: Path, size_mb: int) -> Path:
    """A bundle that ``verify_bundle`` accepts, its model file ``size_mb`` MiB of random bytes."""
    from monolith.bundle import MANIFEST_FILE, MODEL_FILE, REQUIRED_FILES, sha256_file

    folder.mkdir(parents=True)
    for name in REQUIRED_FILES:
        size = size_mb << 20 if name == MODEL_FILE else 4096
        (folder / name).write_bytes(os.urandom(size))
    files = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
    }
    (folder / MANIFEST_FILE).write_text(json.dumps({"bundle_format": 1, "files": files}))
    return folder


def _empty(client, prefix: str) -> None:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    if listed:
        objects = [{"Key": o["Key"]} for o in listed]
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": objects})


def run(args: argparse.Namespace) -> dict:
    import boto3

    from monolith.bundle import publish_bundle
    from monolith.storage import StorageSettings, s3_client
    from tests.integration.s3_server import S3Server

    server = S3Server().start()
    os.environ.update(server.env)
    settings = StorageSettings()  # the defaults: 8 MiB parts, 10 in flight
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = synthetic_bundle(Path(tmp) / "bundle", args.size_mb)
            paths = sorted(bundle.iterdir())
            total = sum(p.stat().st_size for p in paths)
            client = s3_client(settings)
            client.create_bucket(Bucket=BUCKET)
            # the baselines: a default boto3 client, as a hand-written upload would use
            plain = boto3.client("s3", endpoint_url=server.endpoint_url)
            config = settings.transfer_config()

            def this(i: int) -> None:
                publish_bundle(bundle, f"s3://{BUCKET}/published", "bench", f"run-{i}", settings)

            def baseline(i: int, extra: dict | None = None) -> None:
                for path in paths:
                    key = f"plain/{i}/{path.name}"
                    plain.upload_file(str(path), BUCKET, key, Config=config, ExtraArgs=extra)

            def baseline_sha256(i: int) -> None:
                baseline(i, {"ChecksumAlgorithm": "SHA256"})

            measures = {"this": this, "baseline": baseline, "baseline_sha256": baseline_sha256}
            for measure in measures.values():  # warm-up: connections, moto's first writes
                measure(-1)
            _empty(client, "")
            seconds: dict[str, list[float]] = {name: [] for name in measures}
            for i in range(args.rounds):
                order = list(measures)[i % 3 :] + list(measures)[: i % 3]  # rotate who goes first
                for name in order:
                    started = time.perf_counter()
                    measures[name](i)
                    seconds[name].append(time.perf_counter() - started)
                    _empty(client, "")
                logging.info(
                    "round %d: %s", i, ", ".join(f"{n} {s[-1]:.2f}s" for n, s in seconds.items())
                )
            started = time.perf_counter()
            publish_bundle(bundle, f"s3://{BUCKET}/published", "bench", "again", settings)
            publish_bundle(bundle, f"s3://{BUCKET}/published", "bench", "again", settings)
            idempotent_s = time.perf_counter() - started
    finally:
        server.stop()
    mb = total / 1e6
    out: dict = {"bundle_mb": mb, "rounds": args.rounds, "first_plus_idempotent_s": idempotent_s}
    for name, values in seconds.items():
        out[name] = mb / statistics.median(values)
        out[f"{name}_rounds_s"] = values
    out["ratio"] = out["this"] / out["baseline"]
    out["ratio_sha256"] = out["this"] / out["baseline_sha256"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=96, help="model file size (MiB)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (median reported)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("monolith.storage").setLevel(logging.WARNING)
    logging.getLogger("monolith.bundle").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)

    r = run(args)
    print(
        f"bundle publish throughput, moto S3 server on 127.0.0.1 ({r['bundle_mb']:.1f} MB "
        f"bundle, median of {r['rounds']} rounds)"
    )
    print(f"  publish_bundle (upload + verify + latest)  : {r['this']:8.1f} MB/s")
    print(f"  plain boto3 upload_file (baseline)         : {r['baseline']:8.1f} MB/s")
    print(f"  plain upload_file + SHA-256 checksums      : {r['baseline_sha256']:8.1f} MB/s")
    ok = r["ratio"] >= TARGET
    print(
        f"  this / baseline        = {r['ratio']:5.2f}x  "
        f"(target >= {TARGET:g}x: {'met' if ok else 'NOT met'})"
    )
    print(f"  this / baseline+sha256 = {r['ratio_sha256']:5.2f}x  (what the checking itself costs)")
    print(
        f"  first publish + idempotent re-publish of one run: {r['first_plus_idempotent_s']:.2f}s"
    )
    if args.json:
        print(json.dumps(r))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
