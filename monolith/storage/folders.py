"""Folders and small documents wherever they live, a local path or an ``s3://`` prefix: check
access, list, read, write, upload and download, each verified (see ``bucket``), each local
write atomic.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from monolith._atomic import atomic_directory, write_bytes_atomically
from monolith.errors import ConfigError, StorageError
from monolith.storage.bucket import Bucket, LocalFile, ObjectInfo
from monolith.storage.client import s3_client
from monolith.storage.digest import sha256_file
from monolith.storage.settings import StorageSettings
from monolith.uri import is_s3_uri, join_key, parse_s3_uri

log = logging.getLogger(__name__)


def check_access(
    uri: str, settings: StorageSettings | None = None, *, create_bucket: bool = False
) -> None:
    """Preflight ``uri``: wrong credentials, a missing bucket or a dead endpoint -> StorageError.

    With ``create_bucket`` a missing bucket is created. A local path only must not be a file.
    """
    if is_s3_uri(uri):
        bucket, _ = parse_s3_uri(uri)
        Bucket(bucket, settings or StorageSettings()).check(create=create_bucket)
    elif Path(uri).is_file():
        raise StorageError(f"{uri} is a file, expected a folder")


def list_objects(
    uri: str, settings: StorageSettings | None = None, *, literal_prefix: bool = False
) -> list[ObjectInfo]:
    """Every object under the folder ``uri`` (or, with ``literal_prefix``, whose key starts
    with the URI's key), with size and ETag; the bucket is checked first."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = Bucket(bucket_name, settings or StorageSettings())
    bucket.check()
    prefix = key if literal_prefix or not key else f"{key}/"
    return bucket.list_info(prefix)


def object_info(uri: str, settings: StorageSettings | None = None) -> ObjectInfo | None:
    """The object at ``uri`` (size, ETag), or None when there is none."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = Bucket(bucket_name, settings or StorageSettings())
    head = bucket.head(key) if key else None
    if head is None:
        return None
    return ObjectInfo(uri, key, int(head["ContentLength"]), str(head.get("ETag", "")).strip('"'))


def read_object(uri: str, settings: StorageSettings | None = None) -> bytes:
    """The bytes of one object; StorageError naming the URI when it is missing or unreadable."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = Bucket(bucket_name, settings or StorageSettings())
    data = bucket.get_bytes(key)
    if data is None:
        raise StorageError(f"no object {uri} at storage endpoint {bucket.endpoint}")
    return data


def delete_prefix(uri: str, settings: StorageSettings | None = None) -> int:
    """Delete every object under the folder ``uri``; returns how many were deleted."""
    bucket_name, key = parse_s3_uri(uri)
    if not key:
        raise ConfigError(f"refusing to delete a whole bucket ({uri})")
    bucket = Bucket(bucket_name, settings or StorageSettings())
    keys = [info.key for info in bucket.list_info(f"{key}/")]
    bucket.delete(keys)
    return len(keys)


def upload_directory(
    local_dir: str | Path,
    uri: str,
    settings: StorageSettings | None = None,
    *,
    create_bucket: bool = False,
) -> str:
    """Upload every file under ``local_dir`` to ``uri`` (verified, idempotent); returns ``uri``.

    Objects already holding the same bytes are skipped; objects under ``uri`` that are not in
    ``local_dir`` are left alone. A local ``uri`` gets an atomic copy of the folder.
    """
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a folder")
    if not is_s3_uri(uri):
        with atomic_directory(Path(uri)) as tmp:
            shutil.copytree(local_dir, tmp, dirs_exist_ok=True)
        return uri
    bucket_name, prefix = parse_s3_uri(uri)
    bucket = Bucket(bucket_name, settings or StorageSettings())
    bucket.check(create=create_bucket)
    files = [
        LocalFile(
            p,
            join_key(prefix, p.relative_to(local_dir).as_posix()),
            p.stat().st_size,
            sha256_file(p),
        )
        for p in sorted(local_dir.rglob("*"))
        if p.is_file()
    ]
    listed = {join_key(prefix, name) for name in bucket.list(prefix)}
    uploaded, present = bucket.sync(files, absent={f.key for f in files} - listed)
    log.info("uploaded %s -> %s: %d file(s), %d already present", local_dir, uri, uploaded, present)
    return uri


def download_directory(
    uri: str,
    local_dir: str | Path,
    settings: StorageSettings | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Download everything under ``uri`` into ``local_dir``, atomically; returns the folder.

    Objects labelled with a sha256 (everything this module uploads) are checked against it.
    """
    local_dir = Path(local_dir)
    if local_dir.exists() and not overwrite:
        raise StorageError(f"{local_dir} already exists; pass overwrite=True to replace it")
    with atomic_directory(local_dir) as tmp:
        if fill_folder(uri, tmp, settings) is None:
            if is_s3_uri(uri):
                endpoint = s3_client(settings or StorageSettings()).meta.endpoint_url
                raise StorageError(f"nothing under {uri} at storage endpoint {endpoint}")
            raise StorageError(f"{uri}: no such folder")
    return local_dir


def fill_folder(
    uri: str, folder: Path, settings: StorageSettings | None = None, *, check_labels: bool = True
) -> int | None:
    """Copy every file under ``uri`` (a folder or an s3:// prefix) into ``folder``.

    Returns how many files came, or None when ``uri`` holds nothing (no such folder, no object
    under the prefix). Sizes are always checked; with ``check_labels`` each object with a
    sha256 label is hashed and compared with it (a caller that checks the contents itself,
    against a manifest, leaves it off). The bucket is checked first.
    """
    if is_s3_uri(uri):
        bucket_name, prefix = parse_s3_uri(uri)
        bucket = Bucket(bucket_name, settings or StorageSettings())
        bucket.check()
        return bucket.download(prefix, folder, check_labels=check_labels) or None
    if not Path(uri).is_dir():
        return None
    shutil.copytree(uri, folder, dirs_exist_ok=True)
    return sum(1 for p in folder.rglob("*") if p.is_file())


def read_json(uri_or_path: str | Path, settings: StorageSettings | None = None) -> Any:
    """A JSON document from S3 or a local file; StorageError when it is missing or unreadable."""
    where = str(uri_or_path)
    if is_s3_uri(where):
        bucket_name, key = parse_s3_uri(where)
        bucket = Bucket(bucket_name, settings or StorageSettings())
        data = bucket.get_bytes(key)
        if data is None:
            raise StorageError(f"no object {where} at storage endpoint {bucket.endpoint}")
    else:
        try:
            data = Path(where).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"no file {where}") from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{where}: not valid JSON: {exc}") from None


def write_json(uri_or_path: str | Path, data: Any, settings: StorageSettings | None = None) -> None:
    """Write a JSON document to S3 (verified) or atomically to a local file."""
    body = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    write_bytes(uri_or_path, body, settings)


def write_bytes(
    uri_or_path: str | Path, body: bytes, settings: StorageSettings | None = None
) -> None:
    """Write a small file to S3 (verified) or atomically to a local file."""
    where = str(uri_or_path)
    if is_s3_uri(where):
        bucket_name, key = parse_s3_uri(where)
        Bucket(bucket_name, settings or StorageSettings()).put_bytes(key, body)
        return
    write_bytes_atomically(Path(where), body)
