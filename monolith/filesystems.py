"""pyarrow filesystems for locations: local folders and ``s3://`` URIs.

Data files (sources, prepared partitions) are read and written through pyarrow, which reads
only the Parquet columns and row groups asked for, over HTTP range requests on S3. Ray Tune and
Train get the same filesystem for their experiment storage. The S3 endpoint, region and
addressing come from the ``storage:`` settings (else ``AWS_ENDPOINT_URL``); credentials only
from the standard AWS chain, as for boto3.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow.fs as pafs

from monolith.errors import StorageError
from monolith.storage.settings import StorageSettings, aws_environment_digest
from monolith.uri import Location, parse_uri

_CACHE: dict[tuple[StorageSettings, str], Any] = {}
_LOCK = threading.Lock()


def s3_filesystem(settings: StorageSettings | None = None) -> pafs.S3FileSystem:
    """One pyarrow S3 filesystem per settings and AWS_* environment (construction is not free)."""
    settings = settings or StorageSettings()
    key = (settings, aws_environment_digest())
    with _LOCK:
        fs = _CACHE.get(key)
        if fs is None:
            if len(_CACHE) >= 8:
                _CACHE.clear()
            fs = _CACHE[key] = pafs.S3FileSystem(**_s3_options(settings))
    return fs


def _s3_options(settings: StorageSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout_s,
        "request_timeout": settings.read_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
    }
    endpoint = settings.endpoint()
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if settings.region:
        kwargs["region"] = settings.region
    if settings.addressing_style == "virtual":
        kwargs["force_virtual_addressing"] = True
    return kwargs


def arrow_filesystem(
    location: Location | str, settings: StorageSettings | None = None
) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a location: the local filesystem and an absolute path, or
    an S3 filesystem and ``bucket/key``."""
    if not isinstance(location, Location):
        location = parse_uri(location)
    if not location.is_s3:
        return pafs.LocalFileSystem(), location.key
    path = f"{location.bucket}/{location.key}" if location.key else location.bucket
    return s3_filesystem(settings), path


def storage_filesystem(uri: str, settings: StorageSettings | None) -> tuple[Any, str]:
    """``(filesystem or None, path)`` for Ray's ``storage_path`` / ``storage_filesystem``.

    A local folder is created (and must be writable); Ray gets no filesystem for it.
    """
    location = parse_uri(uri, "experiment storage")
    if not location.is_s3:
        try:
            location.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"experiment storage {location} is not writable: {exc}") from None
        return None, location.key
    return arrow_filesystem(location, settings)


def read_bytes(location: Location | str, settings: StorageSettings | None = None) -> bytes:
    """A whole (small) file: metadata JSON, scalers."""
    fs, path = arrow_filesystem(location, settings)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise StorageError(f"no file {location}") from None
    except OSError as exc:
        raise StorageError(f"cannot read {location}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    """An error's first line (its type's name when it has no message): for one-line errors."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
