"""Publishing bundles and reading them back: publish, promote, resolve ``latest``, pull.

Every file is uploaded (multipart when large) and checked against the manifest; then
``manifest.json``; then, the whole bundle verified, ``<experiment>/latest.json`` is pointed at
it. A reader pulls a bundle into a temporary sibling, checks it file by file against its
manifest (and the manifest against ``latest.json``), and only then renames it into place.
The bytes move through ``monolith.storage``; what they must be is this package's.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from monolith._atomic import atomic_directory
from monolith.bundle.schema import (
    LATEST_FILE,
    MANIFEST_FILE,
    SEGMENT,
    check_segment,
    is_latest_for,
    latest_document,
)
from monolith.bundle.verify import verify_bundle
from monolith.errors import BundleError, StorageError
from monolith.storage import (
    Bucket,
    LocalFile,
    StorageSettings,
    fill_folder,
    read_json,
    s3_client,
    sha256_file,
    write_json,
)
from monolith.storage.settings import MIB
from monolith.uri import is_s3_uri, join, join_key, parse_s3_uri

log = logging.getLogger(__name__)


def point_latest(
    root: str,
    experiment: str,
    run_id: str,
    uri: str,
    manifest_sha256: str,
    settings: StorageSettings | None = None,
    *,
    restamp: bool = False,
) -> str:
    """Point ``<root>/<experiment>/latest.json`` at a run; returns the pointer's location.

    A pointer already at this run and manifest is left as it is (not even re-stamped) unless
    ``restamp``.
    """
    latest_uri = join(root, experiment, LATEST_FILE)
    if not restamp:
        try:
            latest: Any = read_json(latest_uri, settings)
        except StorageError:  # none yet, or unreadable: written anew
            latest = None
        if is_latest_for(latest, run_id, uri, manifest_sha256):
            return latest_uri
    write_json(latest_uri, latest_document(experiment, run_id, uri, manifest_sha256), settings)
    return latest_uri


def _different_bundle(where: object, theirs: str, ours: str) -> StorageError:
    return StorageError(
        f"{where} already holds a different bundle (manifest sha256 {theirs[:12]}…, this one "
        f"{ours[:12]}…): publish under a new run id, or pass --overwrite (overwrite=True)"
    )


def publish_bundle(
    bundle_dir: str | Path,
    dest_uri: str,
    experiment: str,
    run_id: str,
    settings: StorageSettings | None = None,
    *,
    create_bucket: bool = False,
    overwrite: bool = False,
    set_latest: bool = True,
) -> str:
    """Publish a verified bundle to ``<dest_uri>/<experiment>/<run_id>/``; returns its URI.

    ``set_latest=False`` leaves ``latest.json`` alone (a pipeline's gate promotes the run
    later with ``promote_bundle``).

    Every file is uploaded (multipart when large) and checked against the manifest; then
    ``manifest.json``; then, the whole bundle verified, ``<experiment>/latest.json`` is
    pointed at it (the last bundle to complete a publish is the latest). Re-running with the
    same run id skips objects that already match and changes nothing; a *different* bundle
    under an existing run id is refused unless ``overwrite``. ``dest_uri`` may be a local
    folder: the bundle is then copied atomically and ``latest.json`` written the same way.
    """
    bundle_dir = Path(bundle_dir)
    check_segment("experiment", experiment)
    check_segment("run_id", run_id)
    # Contents are checked against the manifest's SHA-256 during the upload, not here, so a
    # large bundle is read once.
    entries = verify_bundle(bundle_dir, contents=False).get("files", {})
    manifest_sha = sha256_file(bundle_dir / MANIFEST_FILE)
    if not is_s3_uri(dest_uri):
        return _publish_local(
            bundle_dir, Path(dest_uri), experiment, run_id, manifest_sha, overwrite, set_latest
        )
    settings = settings or StorageSettings()
    bucket_name, root = parse_s3_uri(dest_uri)
    run_key = join_key(root, experiment, run_id)
    bucket = Bucket(bucket_name, settings)
    started = time.perf_counter()
    bucket.check(create=create_bucket)
    present = bucket.list(run_key)
    _make_room(bucket, run_key, present, manifest_sha, overwrite)
    files, uploaded, skipped = _upload(bucket, bundle_dir, run_key, entries, present, manifest_sha)
    _check_listing(bucket, run_key, entries)
    bundle_uri = bucket.uri(run_key)
    latest = join(dest_uri, experiment, LATEST_FILE)
    if set_latest:
        point_latest(dest_uri, experiment, run_id, bundle_uri, manifest_sha, settings)
    bucket.abort_stale_uploads(run_key)
    log.info(
        "published %s: %d of %d file(s) uploaded, %d already present (%.1f MiB verified, "
        "%.1fs); %s -> %s",
        bundle_uri,
        uploaded,
        len(files),
        skipped,
        sum(f.size for f in files) / MIB,
        time.perf_counter() - started,
        latest,
        run_id,
    )
    return bundle_uri


def _make_room(
    bucket: Bucket, run_key: str, present: dict[str, int], manifest_sha: str, overwrite: bool
) -> None:
    """Refuse a different bundle under the run id, or (``overwrite``) unmark it for replacing."""
    if MANIFEST_FILE not in present:
        return
    remote = bucket.get_bytes(join_key(run_key, MANIFEST_FILE)) or b""
    remote_sha = hashlib.sha256(remote).hexdigest()
    if remote_sha == manifest_sha:
        return
    if not overwrite:
        raise _different_bundle(bucket.uri(run_key), remote_sha, manifest_sha)
    log.warning("replacing the different bundle at %s (overwrite)", bucket.uri(run_key))
    # Unmark it first: without its manifest the prefix is no bundle while it changes.
    bucket.delete([join_key(run_key, MANIFEST_FILE)])


def _upload(
    bucket: Bucket,
    bundle_dir: Path,
    run_key: str,
    entries: dict[str, dict[str, Any]],
    present: dict[str, int],
    manifest_sha: str,
) -> tuple[list[LocalFile], int, int]:
    """Upload the manifest's files, remove objects it does not list, then the manifest.

    Returns every file sent or found present (the manifest last) and the two counts.
    """
    present_keys = {join_key(run_key, name) for name in present}
    files = [
        LocalFile(bundle_dir / name, join_key(run_key, name), entry["bytes"], entry["sha256"])
        for name, entry in sorted(entries.items())
    ]
    uploaded, skipped = bucket.sync(files, absent={f.key for f in files} - present_keys)
    stale = sorted(set(present) - set(entries) - {MANIFEST_FILE})
    if stale:
        log.info("removing %d object(s) not in this bundle's manifest: %s", len(stale), stale)
        bucket.delete([join_key(run_key, name) for name in stale])
    path = bundle_dir / MANIFEST_FILE
    manifest = LocalFile(path, join_key(run_key, MANIFEST_FILE), path.stat().st_size, manifest_sha)
    up, skip = bucket.sync([manifest], absent={manifest.key} - present_keys)
    return [*files, manifest], uploaded + up, skipped + skip


def _check_listing(bucket: Bucket, run_key: str, entries: dict[str, Any]) -> None:
    """The bundle as a reader will list it: exactly the manifest's files, each verified."""
    listed = set(bucket.list(run_key))
    expected = set(entries) | {MANIFEST_FILE}
    if listed != expected:
        raise StorageError(
            f"{bucket.uri(run_key)}: objects {sorted(listed ^ expected)} differ from the "
            "manifest after upload (a concurrent writer?); latest.json not updated"
        )


def _publish_local(
    bundle_dir: Path,
    root: Path,
    experiment: str,
    run_id: str,
    manifest_sha: str,
    overwrite: bool,
    set_latest: bool = True,
) -> str:
    target = root / experiment / run_id
    manifest = target / MANIFEST_FILE
    same = manifest.is_file() and sha256_file(manifest) == manifest_sha
    if same:
        try:
            verify_bundle(target)
        except BundleError as exc:
            log.warning("repairing %s: %s", target, exc)
            same = False
    elif manifest.is_file() and not overwrite:
        raise _different_bundle(target, sha256_file(manifest), manifest_sha)
    if not same:
        with atomic_directory(target) as tmp:
            for path in sorted(bundle_dir.iterdir()):
                shutil.copyfile(path, tmp / path.name)
            try:
                verify_bundle(tmp)
            except BundleError as exc:
                raise BundleError(str(exc).replace(str(tmp), str(bundle_dir))) from None
    uri = str(target.resolve())
    if not set_latest:
        log.info("published %s (local); latest.json left as it was", uri)
        return uri
    latest = point_latest(str(root), experiment, run_id, uri, manifest_sha)
    log.info("published %s (local); %s -> %s", uri, latest, run_id)
    return uri


def promote_bundle(
    dest_uri: str, experiment: str, run_id: str, settings: StorageSettings | None = None
) -> str:
    """Point ``<dest_uri>/<experiment>/latest.json`` at an already published run, after
    pulling it and verifying every file; returns the bundle's URI."""
    check_segment("experiment", experiment)
    check_segment("run_id", run_id)
    uri = join(dest_uri, experiment, run_id)
    with tempfile.TemporaryDirectory(prefix="monolith-promote-") as tmp:
        pulled = pull_bundle(uri, Path(tmp) / "bundle", settings)
        manifest_sha = sha256_file(pulled / MANIFEST_FILE)
    if not is_s3_uri(uri):
        uri = str(Path(uri).resolve())
    point_latest(dest_uri, experiment, run_id, uri, manifest_sha, settings, restamp=True)
    log.info("promoted %s: %s/%s/latest.json -> %s", uri, dest_uri, experiment, run_id)
    return uri


def resolve_bundle_uri(uri: str, settings: StorageSettings | None = None) -> tuple[str, str | None]:
    """A bundle URI or path, and the manifest SHA-256 it must have (None when not pinned).

    ``<root>/<experiment>/latest`` (or ``.../latest.json``) resolves through ``latest.json``
    to ``<root>/<experiment>/<run_id>``, pinned to the manifest it recorded.
    """
    base = str(uri).rstrip("/")
    parent, _, name = base.rpartition("/")
    if name not in ("latest", LATEST_FILE) or not parent:
        return base, None
    if not is_s3_uri(base) and (Path(base) / MANIFEST_FILE).is_file():
        return base, None  # a bundle folder that happens to be called "latest"
    latest_uri = f"{parent}/{LATEST_FILE}"
    if is_s3_uri(latest_uri):
        bucket_name, key = parse_s3_uri(latest_uri)
        bucket = Bucket(bucket_name, settings or StorageSettings())
        bucket.check()
        exists = bucket.head(key) is not None
    else:
        exists = Path(latest_uri).is_file()
    if not exists:
        raise StorageError(
            f"no {LATEST_FILE} at {parent}: nothing has been published for this experiment yet"
        )
    latest = read_json(latest_uri, settings)
    run_id = latest.get("run_id") if isinstance(latest, dict) else None
    if not isinstance(run_id, str) or not SEGMENT.fullmatch(run_id):
        raise BundleError(f"{latest_uri}: run_id {run_id!r} is not a plain run id")
    return f"{parent}/{run_id}", latest.get("manifest_sha256")


def pull_bundle(
    uri: str,
    dest: str | Path,
    settings: StorageSettings | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Download a bundle (or ``…/latest``) to ``dest``, verified; returns ``dest``.

    It lands in a temporary sibling, is checked file by file against its manifest (and the
    manifest against ``latest.json``), and only then renamed to ``dest``: a bundle that fails
    raises BundleError naming the file and leaves no ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise BundleError(f"{dest} already exists; pass --overwrite to replace it")
    settings = settings or StorageSettings()
    bundle_uri, pinned = resolve_bundle_uri(uri, settings)
    with atomic_directory(dest) as tmp:
        # Objects are checked against the manifest below, not against their labels.
        if fill_folder(bundle_uri, tmp, settings, check_labels=False) is None:
            if is_s3_uri(bundle_uri):
                endpoint = s3_client(settings).meta.endpoint_url
                raise BundleError(f"{bundle_uri}: no such bundle at {endpoint}")
            raise BundleError(f"{bundle_uri}: no such bundle folder")
        try:
            manifest = verify_bundle(tmp)
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(tmp), bundle_uri)) from None
        if pinned and sha256_file(tmp / MANIFEST_FILE) != pinned:
            raise BundleError(
                f"bundle {bundle_uri}: manifest.json is not the one {LATEST_FILE} recorded "
                f"(sha256 {sha256_file(tmp / MANIFEST_FILE)[:12]}… != {pinned[:12]}…)"
            )
    log.info("pulled %s -> %s (%d files verified)", bundle_uri, dest, len(manifest["files"]) + 1)
    return dest
