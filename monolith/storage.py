"""S3-compatible storage (boto3) and its local fallback: publish and pull bundles, stage folders.

Layout, under a root that is ``s3://bucket/prefix`` or a local folder::

    <root>/<experiment>/<run_id>/...   one bundle; manifest.json goes up last
    <root>/<experiment>/latest.json    {"run_id", "uri", "manifest_sha256", "published_at"},
                                       rewritten only after the whole bundle is verified

Integrity. Every object goes up with an S3 additional checksum (SHA-256 of each request's
bytes, hashed in the same read that checks the file's SHA-256 against the manifest) and the
file's hex SHA-256 as metadata (``x-amz-meta-sha256``). After the upload the server's checksum
of what it stored is compared with ours: from the upload's response where the server sends one
(S3, MinIO), else from a HEAD (size, label and checksum). A single-part object's checksum *is*
the file's SHA-256. A multipart object's is composite (the SHA-256 of its parts' SHA-256s,
shown as ``…-N``), compared with the composite of the parts we sent; the manifest's SHA-256 is
checked on the same bytes before the upload is completed, so a file that does not match its
manifest never becomes an object. A server that reports no checksum is verified by reading
back.

Credentials come only from the standard boto3 chain (environment, profile, web identity): the
config refuses them, and they are never logged or written. botocore logs signed request headers
(with the access key id) at DEBUG, so its logger is held at INFO unless a level was set for it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.loaders
import botocore.session
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError
from s3transfer.utils import ChunksizeAdjuster

from monolith._atomic import atomic_directory
from monolith.artifacts import MANIFEST_FILE, REQUIRED_FILES, read_manifest, sha256_file
from monolith.artifacts import verify_bundle as _verify_bundle
from monolith.config import check_choice, check_float, check_int, fail
from monolith.errors import BundleError, ConfigError, MonolithError, StorageError
from monolith.uri import is_s3_uri, parse_s3_uri

if TYPE_CHECKING:
    from monolith.config import MonolithConfig

log = logging.getLogger(__name__)

LATEST_FILE = "latest.json"
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the file's hex SHA-256, as the manifest lists it
ADDRESSING_STYLES = ("auto", "path", "virtual")
_MIB = 1 << 20
# Whole-file attempts on top of botocore's per-request retries: a multipart upload that lost
# a part is aborted by s3transfer and must start again; so must one that fails verification.
_FILE_ATTEMPTS = 3
_FILE_BACKOFF_S = 0.5
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,127}")
_RESERVED = ("latest", LATEST_FILE)  # names that mean the pointer, never a run
_ENDPOINT = re.compile(r"https?://[^\s/@]+(/[^\s]*)?")
_CREDENTIAL_WORDS = ("secret", "password", "token", "access_key", "credential")
_BAD_CREDENTIALS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
        "NoSuchUpload",
    }
)


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageSettings:
    """How to reach the object store: the YAML config's ``storage:`` section. No credentials."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS
    region: str | None = None  # None: the boto3 chain (AWS_DEFAULT_REGION, profile)
    addressing_style: str = "auto"  # "path" for MinIO and most self-hosted stores
    max_attempts: int = 5  # per request: botocore "standard" retries, exponential backoff
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    multipart_threshold_mb: int = 8  # MiB; larger files go up in parts
    multipart_chunksize_mb: int = 8  # MiB per part (S3's minimum part is 5 MiB)
    max_concurrency: int = 10  # parts / files in flight at once

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "storage") -> StorageSettings:
        """Validated settings from a config mapping; credentials in it are refused, unshown."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
        secret = sorted(k for k in raw if any(w in str(k).lower() for w in _CREDENTIAL_WORDS))
        if secret:
            raise ConfigError(
                f"{where}.{secret[0]}: credentials are not accepted in config (value not shown); "
                "provide them through the standard AWS chain: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity token"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {[f'{where}.{k}' for k in unknown]}; allowed under {where}: "
                f"{sorted(names)}"
            )
        return cls(**raw).validate(where)

    @classmethod
    def from_config(cls, cfg: MonolithConfig) -> StorageSettings:
        """From a ``MonolithConfig`` (its ``storage:`` section, kept in ``cfg.storage``)."""
        return cls.from_mapping(cfg.storage)

    def validate(self, where: str = "storage") -> StorageSettings:
        url = self.endpoint_url
        if isinstance(url, str) and "@" in url:
            raise ConfigError(
                f"{where}.endpoint_url must not embed credentials (user:password@; value not "
                "shown): use the standard AWS credential chain"
            )
        if url is not None and (not isinstance(url, str) or not _ENDPOINT.fullmatch(url)):
            raise fail(
                where,
                "endpoint_url",
                url,
                "expected an http(s) URL such as http://minio:9000, or leave it out to use "
                "AWS_ENDPOINT_URL or AWS S3",
            )
        if self.region is not None and (
            not isinstance(self.region, str) or not re.fullmatch(r"[a-z0-9-]+", self.region)
        ):
            raise fail(where, "region", self.region, "expected a region name like us-east-1")
        check_choice(where, "addressing_style", self.addressing_style, ADDRESSING_STYLES)
        check_int(where, "max_attempts", self.max_attempts, 1, 20)
        check_float(where, "connect_timeout_s", self.connect_timeout_s, 0, 600, lo_open=True)
        check_float(where, "read_timeout_s", self.read_timeout_s, 0, 3600, lo_open=True)
        check_int(where, "multipart_threshold_mb", self.multipart_threshold_mb, 1, 5120)
        check_int(where, "multipart_chunksize_mb", self.multipart_chunksize_mb, 5, 5120)
        check_int(where, "max_concurrency", self.max_concurrency, 1, 64)
        return self

    def endpoint(self) -> str | None:
        """The endpoint in use: the config's, else ``AWS_ENDPOINT_URL(_S3)``, else AWS (None)."""
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold_mb * _MIB,
            multipart_chunksize=self.multipart_chunksize_mb * _MIB,
            max_concurrency=self.max_concurrency,
            # Downloads only (uploads are ours); the classic manager, whichever is installed.
            preferred_transfer_client="classic",
        )

    def part_size(self, size: int) -> int | None:
        """Part size for uploading ``size`` bytes (s3transfer's rule); None: a single PUT."""
        if size < self.multipart_threshold_mb * _MIB:
            return None
        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize_mb * _MIB, size)


def _hold_botocore_debug() -> None:
    # botocore's DEBUG records include the signed request (Authorization: ... Credential=<key
    # id>/...). A -v run must not print it, so botocore stays at INFO unless set explicitly.
    botocore_log = logging.getLogger("botocore")
    if botocore_log.level == logging.NOTSET:
        botocore_log.setLevel(logging.INFO)


_CLIENTS: dict[tuple[StorageSettings, bool, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _aws_environment_digest() -> str:
    """A digest of the AWS_* environment the credential chain and endpoint resolve from."""
    digest = hashlib.sha256()
    for name in sorted(n for n in os.environ if n.startswith("AWS_")):
        digest.update(f"{name}={os.environ[name]}\0".encode())
    return digest.hexdigest()


def s3_client(settings: StorageSettings | None = None, *, sign_payload: bool = True) -> Any:
    """A boto3 S3 client for ``settings``; credentials from the standard boto3 chain.

    ``sign_payload=False`` leaves request bodies out of the SigV4 signature, as botocore does
    by itself over HTTPS; only for uploads that carry a SHA-256 checksum header (signed, and
    checked by the server), where signing the body too would hash every byte twice.

    Clients are thread-safe and cost ~15 ms to build, so one is kept per settings and AWS_*
    environment (the key holds a digest of it, not its values): changed credentials, profile
    or endpoint in the environment give a new client, and refreshable credentials (web
    identity, SSO) refresh inside a kept one.
    """
    settings = settings or StorageSettings()
    _hold_botocore_debug()
    key = (settings, sign_payload, _aws_environment_digest())
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if len(_CLIENTS) >= 16:
                _CLIENTS.clear()
            client = _CLIENTS[key] = _new_s3_client(settings, sign_payload)
    return client


def _new_s3_client(settings: StorageSettings, sign_payload: bool) -> Any:
    s3_options: dict[str, Any] = {"addressing_style": settings.addressing_style}
    if not sign_payload:
        s3_options["payload_signing_enabled"] = False
    config = BotoConfig(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        s3=s3_options,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        max_pool_connections=max(10, settings.max_concurrency + 2),
    )
    session = botocore.session.Session()
    # A fresh session resolves credentials anew; the shared loader keeps the parsed service
    # models, which otherwise cost ~50 ms per client.
    session.register_component("data_loader", _shared_loader())
    return boto3.session.Session(botocore_session=session).client(
        "s3", endpoint_url=settings.endpoint(), config=config
    )


@functools.cache
def _shared_loader() -> Any:
    return botocore.loaders.create_loader()


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def check_segment(what: str, value: str) -> None:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or value in _RESERVED:
        raise ConfigError(
            f"{what} = {value!r} is invalid: 1-128 letters, digits, '.', '_', '=', '-', starting "
            f"with a letter or digit, and not {list(_RESERVED)}"
        )


# -- errors ----------------------------------------------------------------------------------
class _Mismatch(Exception):
    """An uploaded object differs from its file (transient until the attempts run out)."""


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, RetriesExceededError):
        exc = exc.last_exception
    if isinstance(exc, _Mismatch | BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        return (_status(exc) or 0) >= 500 or _code(exc) in _TRANSIENT_CODES
    return False


def _unreachable_reason(exc: BaseException, settings: StorageSettings) -> str:
    if isinstance(exc, ConnectTimeoutError):
        return f"connection timed out after {settings.connect_timeout_s:g}s"
    if isinstance(exc, ReadTimeoutError):
        return f"no response within {settings.read_timeout_s:g}s"
    if isinstance(exc, EndpointConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, ConnectionClosedError):
        return "connection closed mid-request"
    return type(exc).__name__


# -- one bucket ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: what a fingerprint needs, known without downloading it."""

    uri: str
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class _File:
    path: Path
    key: str
    size: int
    sha256: str  # hex: what the object must hold (the manifest's entry, or the file's hash)


def _local_mismatch(file: _File, sha256_hex: str) -> BundleError:
    return BundleError(
        f"local file {file.path} changed or does not match its manifest: sha256 "
        f"{sha256_hex[:12]}… != {file.sha256[:12]}…"
    )


class _Bucket:
    """One bucket on one endpoint; every boto error leaves as a one-line StorageError."""

    def __init__(self, name: str, settings: StorageSettings) -> None:
        self.name = name
        self.settings = settings
        self.client = s3_client(settings)
        self.endpoint: str = self.client.meta.endpoint_url
        self._uploader: Any = None
        self._composites: dict[tuple[Path, int], tuple[str, int]] = {}
        self._told_read_back = False

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    # errors
    def error(self, exc: BaseException, doing: str, key: str | None = None) -> MonolithError:
        if isinstance(exc, MonolithError):
            return exc
        if isinstance(exc, RetriesExceededError):
            exc = exc.last_exception
        where = f"storage endpoint {self.endpoint}, bucket '{self.name}'"
        log.debug("%s failed: %s: %s", doing, type(exc).__name__, exc)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no AWS credentials found ({where}) while {doing}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity token"
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return StorageError(
                f"cannot reach {where} while {doing}: {_unreachable_reason(exc, self.settings)} "
                f"({self.settings.max_attempts} attempt(s) per request)"
            )
        if isinstance(exc, _Mismatch):
            return StorageError(f"{where}: {exc} after {_FILE_ATTEMPTS} upload attempts")
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            if code in _BAD_CREDENTIALS:
                return StorageError(
                    f"{where} rejected the credentials ({code}) while {doing}: check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the web identity"
                )
            if code in ("AccessDenied", "403") or status == 403:
                return StorageError(
                    f"{where} denied access ({code or 'HTTP 403'}) while {doing}: the "
                    "credentials are wrong, or lack permission on this bucket"
                )
            if code == "NoSuchBucket" or (key is None and status == 404):
                return StorageError(
                    f"bucket '{self.name}' does not exist at storage endpoint {self.endpoint}: "
                    "create it, or pass --create-bucket (create_bucket=True)"
                )
            if key is not None and status == 404:
                return StorageError(
                    f"no object {self.uri(key)} at storage endpoint {self.endpoint}"
                )
            return StorageError(f"{where} refused {doing}: {code or 'error'} (HTTP {status})")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{where}: {doing} failed: {exc}")
        return StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {exc}")

    @contextmanager
    def errors(self, doing: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, RetriesExceededError) as exc:
            raise self.error(exc, doing, key) from None

    # bucket-level
    def check(self, *, create: bool = False) -> None:
        """Preflight: the bucket exists and our credentials may use it (or create it)."""
        try:
            self.client.head_bucket(Bucket=self.name)
            return
        except ClientError as exc:
            if not (create and _status(exc) == 404):
                raise self.error(exc, "checking the bucket") from None
        except (BotoCoreError, RetriesExceededError) as exc:
            raise self.error(exc, "checking the bucket") from None
        kwargs: dict[str, Any] = {"Bucket": self.name}
        region = self.client.meta.region_name
        if region and region not in ("us-east-1", "aws-global"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":
                raise self.error(exc, "creating the bucket") from None
        except BotoCoreError as exc:
            raise self.error(exc, "creating the bucket") from None
        log.info("created bucket %s at %s", self.name, self.endpoint)

    def list(self, prefix: str) -> dict[str, int]:
        """Objects under ``prefix/``: relative name -> size."""
        out: dict[str, int] = {}
        start = f"{prefix}/" if prefix else ""
        with self.errors(f"listing {self.uri(start)}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=start
            ):
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(start) :]] = obj["Size"]
        return out

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a literal prefix, not a folder)."""
        out: list[ObjectInfo] = []
        with self.errors(f"listing {self.uri(prefix)}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    etag = str(obj.get("ETag", "")).strip('"')
                    out.append(ObjectInfo(self.uri(obj["Key"]), obj["Key"], obj["Size"], etag))
        return out

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata and checksum; None when it does not exist."""
        with self.errors(f"reading the metadata of {self.uri(key)}", key):
            return self._head(key)

    def _head(self, key: str) -> dict[str, Any] | None:
        # raw boto errors, so that the upload loop can tell transient ones and retry
        try:
            return self.client.head_object(Bucket=self.name, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                return None
            raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                return None
            raise self.error(exc, f"reading {self.uri(key)}", key) from None
        except (BotoCoreError, RetriesExceededError) as exc:
            raise self.error(exc, f"reading {self.uri(key)}", key) from None

    def put_bytes(self, key: str, data: bytes, *, absent: bool = False) -> None:
        """Write a small object (verified like any other) through a temporary file."""
        fd, tmp = tempfile.mkstemp(prefix=".monolith-put-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            file = _File(Path(tmp), key, len(data), hashlib.sha256(data).hexdigest())
            self.sync([file], absent={key} if absent else ())
        finally:
            os.unlink(tmp)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            with self.errors(f"deleting {len(batch)} object(s) under {self.uri('')}"):
                out = self.client.delete_objects(Bucket=self.name, Delete={"Objects": batch})
            if out.get("Errors"):
                first = out["Errors"][0]
                raise StorageError(
                    f"storage endpoint {self.endpoint} could not delete {self.uri(first['Key'])}: "
                    f"{first.get('Code')}"
                )

    def abort_stale_uploads(self, prefix: str) -> None:
        """Abort multipart uploads a failed attempt left under ``prefix/`` (they cost storage)."""
        try:
            uploads = self.client.list_multipart_uploads(Bucket=self.name, Prefix=f"{prefix}/")
            for upload in uploads.get("Uploads", []):
                self.client.abort_multipart_upload(
                    Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                log.debug("aborted a stale multipart upload of %s", self.uri(upload["Key"]))
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not clean stale multipart uploads under %s: %s", prefix, exc)

    # files
    @property
    def uploader(self) -> Any:
        """The client our uploads go through, with unsigned bodies (see ``s3_client``)."""
        # Each PutObject / UploadPart carries a signed SHA-256 checksum header that the server
        # checks the body against; a tampered CompleteMultipartUpload would show as a wrong
        # composite checksum in the verification after every upload.
        if self._uploader is None:
            self._uploader = s3_client(self.settings, sign_payload=False)
        return self._uploader

    def _composite(self, file: _File) -> tuple[str, int]:
        """The local file's composite SHA-256 (base64) and part count, as S3 computes them.

        The same read checks the file's SHA-256 against what the object must hold, so a
        composite match ties the remote object to the manifest.
        """
        part_size = self.settings.part_size(file.size) or file.size
        cached = self._composites.get((file.path, part_size))
        if cached:
            return cached
        full, composite, parts = hashlib.sha256(), hashlib.sha256(), 0
        buffer = memoryview(bytearray(min(8 * _MIB, part_size)))
        with open(file.path, "rb", buffering=0) as fh:
            while True:
                part, got = hashlib.sha256(), 0
                while got < part_size and (n := fh.readinto(buffer[: part_size - got])):
                    full.update(buffer[:n])
                    part.update(buffer[:n])
                    got += n
                if not got:
                    break
                composite.update(part.digest())
                parts += 1
        if full.hexdigest() != file.sha256:
            raise _local_mismatch(file, full.hexdigest())
        out = (base64.b64encode(composite.digest()).decode(), parts)
        self._composites[(file.path, part_size)] = out
        return out

    def _problem(self, file: _File, head: dict[str, Any] | None) -> str | None:
        """Why the object differs from ``file`` (None: it matches, checksum included)."""
        if head is None:
            return "missing"
        size = head.get("ContentLength")
        if size != file.size:
            return f"size {size} != {file.size}"
        label = (head.get("Metadata") or {}).get(SHA256_METADATA)
        if label != file.sha256:
            return f"sha256 metadata {str(label)[:12]}… != {file.sha256[:12]}…"
        checksum = head.get("ChecksumSHA256")
        if not checksum:
            return self._read_back_problem(file)
        value, _, suffix = checksum.partition("-")
        etag = str(head.get("ETag", "")).strip('"')
        parts = int(suffix) if suffix.isdigit() else None
        if parts is None and re.fullmatch(r"[0-9a-f]{32}-\d+", etag):
            parts = int(etag.rpartition("-")[2])
        if head.get("ChecksumType") != "COMPOSITE" and parts is None:
            remote = base64.b64decode(value).hex()
            if remote == file.sha256:
                return None
            local = sha256_file(file.path)
            if local != file.sha256:
                raise _local_mismatch(file, local)
            return f"server checksum {remote[:12]}… != {file.sha256[:12]}…"
        expected, expected_parts = self._composite(file)
        if parts is not None and parts != expected_parts:
            return f"{parts} parts, expected {expected_parts}"
        if value != expected:
            return f"composite checksum {value[:12]}… != local {expected[:12]}…"
        return None

    def _read_back_problem(self, file: _File) -> str | None:
        if not self._told_read_back:
            log.info("%s reports no SHA-256 checksums: verifying by reading back", self.endpoint)
            self._told_read_back = True
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.name, Key=file.key)["Body"]
        for chunk in body.iter_chunks(_MIB):
            digest.update(chunk)
        if digest.hexdigest() != file.sha256:
            return f"read-back sha256 {digest.hexdigest()[:12]}… != {file.sha256[:12]}…"
        return None

    def sync(self, files: list[_File], *, absent: Collection[str] = ()) -> tuple[int, int]:
        """Make every object equal to its file, verified; returns (uploaded, already there).

        Each attempt first checks what is already there (so a retry re-sends only what is
        missing or wrong; keys in ``absent``, just listed as missing, are not asked about the
        first time), then uploads and verifies the rest. Transient failures (connection, 5xx,
        throttling, a verification mismatch) are retried with backoff; others raise.
        """
        todo, sent, attempt = list(files), set(), 0
        while True:
            attempt += 1
            failures: list[tuple[_File, BaseException]] = []
            pending = []
            for file in todo:
                if attempt == 1 and file.key in absent:
                    pending.append(file)
                    continue
                try:
                    if self._problem(file, self._head(file.key)) is None:
                        log.debug("%s present and verified", self.uri(file.key))
                        continue
                except Exception as exc:  # sorted into transient / fatal below
                    failures.append((file, exc))
                    continue
                pending.append(file)
            sent.update(f.key for f in pending)
            failures += self._upload_and_verify(pending)
            if not failures:
                return len(sent), len(files) - len(sent)
            file, exc = next(((f, e) for f, e in failures if not _is_transient(e)), failures[0])
            if not _is_transient(exc) or attempt == _FILE_ATTEMPTS:
                raise self.error(exc, f"uploading {self.uri(file.key)}", file.key)
            delay = _FILE_BACKOFF_S * 2 ** (attempt - 1)
            log.warning(
                "%d file(s) failed (%s: %s); retrying in %.1fs",
                len(failures),
                self.uri(file.key),
                type(exc).__name__,
                delay,
            )
            time.sleep(delay)
            todo = [f for f, _ in failures]

    def _upload_and_verify(self, files: list[_File]) -> list[tuple[_File, BaseException]]:
        """Upload ``files`` (up to ``max_concurrency`` requests in flight), each verified.

        boto3's managed transfer cannot take per-part checksums it did not compute, so it would
        hash every byte once more than we must: here each part is read once, hashed once for
        its checksum header and once into the file's SHA-256, and sent as it is.
        """
        failures: list[tuple[_File, BaseException]] = []
        with ThreadPoolExecutor(self.settings.max_concurrency) as pool:
            singles = {
                pool.submit(self._put_file, f): f
                for f in files
                if not self.settings.part_size(f.size)
            }
            for f in files:
                if self.settings.part_size(f.size):
                    try:
                        self._multipart_file(f, pool)
                    except Exception as exc:  # sorted into transient / fatal by the caller
                        failures.append((f, exc))
            for future, f in singles.items():
                try:
                    future.result()
                except Exception as exc:
                    failures.append((f, exc))
        return failures

    def _put_file(self, file: _File) -> None:
        data = file.path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest.hex() != file.sha256:
            raise _local_mismatch(file, digest.hex())
        checksum = base64.b64encode(digest).decode()
        out = self.uploader.put_object(
            Bucket=self.name,
            Key=file.key,
            Body=data,
            ChecksumSHA256=checksum,
            Metadata={SHA256_METADATA: file.sha256},
        )
        self._verify(file, out.get("ChecksumSHA256"), checksum)

    def _multipart_file(self, file: _File, pool: ThreadPoolExecutor) -> None:
        part_size = self.settings.part_size(file.size) or file.size
        started = self.uploader.create_multipart_upload(
            Bucket=self.name,
            Key=file.key,
            ChecksumAlgorithm="SHA256",
            Metadata={SHA256_METADATA: file.sha256},
        )
        upload_id = started["UploadId"]
        # At most max_concurrency parts are read ahead and in flight (memory: parts x size).
        slots = threading.BoundedSemaphore(self.settings.max_concurrency)
        sent: list[Any] = []
        try:
            full, composite = hashlib.sha256(), hashlib.sha256()
            with open(file.path, "rb") as fh:
                while chunk := fh.read(part_size):
                    digest = hashlib.sha256(chunk).digest()
                    full.update(chunk)
                    composite.update(digest)
                    slots.acquire()
                    if any(f.done() and f.exception() for f in sent):
                        slots.release()
                        break  # a part failed for good: stop reading, raise it below
                    future = pool.submit(
                        self._upload_part, file.key, upload_id, len(sent) + 1, chunk, digest
                    )
                    future.add_done_callback(lambda _: slots.release())
                    sent.append(future)
            parts = [f.result() for f in sent]  # raises a failed part's error
            if full.hexdigest() != file.sha256:
                raise _local_mismatch(file, full.hexdigest())
            expected = base64.b64encode(composite.digest()).decode()
            self._composites[(file.path, part_size)] = (expected, len(parts))
            out = self.uploader.complete_multipart_upload(
                Bucket=self.name,
                Key=file.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            for future in sent:
                future.cancel()
            with contextlib.suppress(Exception):
                self.uploader.abort_multipart_upload(
                    Bucket=self.name, Key=file.key, UploadId=upload_id
                )
            raise
        self._verify(file, out.get("ChecksumSHA256"), f"{expected}-{len(parts)}")

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytes, digest: bytes
    ) -> dict[str, Any]:
        checksum = base64.b64encode(digest).decode()
        out = self.uploader.upload_part(
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=checksum,
        )
        reported = out.get("ChecksumSHA256")
        if reported and reported != checksum:
            raise _Mismatch(
                f"{self.uri(key)} part {number}: server checksum {reported} != {checksum}"
            )
        return {"PartNumber": number, "ETag": out["ETag"], "ChecksumSHA256": checksum}

    def _verify(self, file: _File, reported: str | None, expected: str) -> None:
        """The server's checksum of what it stored against ours; HEAD when it sent none."""
        if reported:
            # S3 and MinIO answer with the checksum of the stored object (a composite as
            # "<base64>-<parts>"), computed from the bytes they received.
            value, _, parts = reported.partition("-")
            want, _, want_parts = expected.partition("-")
            if value == want and (not parts or parts == want_parts):
                return
            raise _Mismatch(
                f"{self.uri(file.key)} differs after upload: checksum {reported} != {expected}"
            )
        problem = self._problem(file, self._head(file.key))
        if problem:
            raise _Mismatch(f"{self.uri(file.key)} differs after upload: {problem}")

    def download(self, prefix: str, local: Path, *, check_labels: bool) -> int:
        """Download every object under ``prefix/`` into ``local``; returns the count.

        Sizes are always checked; with ``check_labels`` each object with a sha256 label is
        hashed and compared with it (bundles are checked against their manifest instead).
        """
        # "folder/" keys are console-made folder markers, not files
        objects = {k: v for k, v in self.list(prefix).items() if k and not k.endswith("/")}
        for name in objects:
            if any(part in ("", ".", "..") for part in name.split("/")):
                raise StorageError(f"refusing object {self.uri(_join(prefix, name))}: unsafe name")
        with (
            self.errors(f"downloading {self.uri(prefix)}"),
            create_transfer_manager(self.client, self.settings.transfer_config()) as manager,
        ):
            transfers = []
            for name in sorted(objects):
                target = local.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                key = _join(prefix, name)
                transfers.append(manager.download(self.name, key, str(target)))
            for transfer in transfers:
                transfer.result()
        for name, size in objects.items():
            path = local.joinpath(*name.split("/"))
            if path.stat().st_size != size:
                raise StorageError(f"{self.uri(_join(prefix, name))}: downloaded size differs")
            if check_labels:
                head = self.head(_join(prefix, name)) or {}
                label = (head.get("Metadata") or {}).get(SHA256_METADATA)
                if label and sha256_file(path) != label:
                    raise StorageError(
                        f"{self.uri(_join(prefix, name))}: content does not match its sha256 "
                        f"label {label[:12]}… (corrupted in storage?)"
                    )
        return len(objects)


# -- generic folders and JSON ------------------------------------------------------------------
def check_access(
    uri: str, settings: StorageSettings | None = None, *, create_bucket: bool = False
) -> None:
    """Preflight ``uri``: wrong credentials, a missing bucket or a dead endpoint -> StorageError.

    With ``create_bucket`` a missing bucket is created. A local path only must not be a file.
    """
    if is_s3_uri(uri):
        bucket, _ = parse_s3_uri(uri)
        _Bucket(bucket, settings or StorageSettings()).check(create=create_bucket)
    elif Path(uri).is_file():
        raise StorageError(f"{uri} is a file, expected a folder")


def list_objects(
    uri: str, settings: StorageSettings | None = None, *, literal_prefix: bool = False
) -> list[ObjectInfo]:
    """Every object under the folder ``uri`` (or, with ``literal_prefix``, whose key starts
    with the URI's key), with size and ETag; the bucket is checked first."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = _Bucket(bucket_name, settings or StorageSettings())
    bucket.check()
    prefix = key if literal_prefix or not key else f"{key}/"
    return bucket.list_info(prefix)


def object_info(uri: str, settings: StorageSettings | None = None) -> ObjectInfo | None:
    """The object at ``uri`` (size, ETag), or None when there is none."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = _Bucket(bucket_name, settings or StorageSettings())
    head = bucket.head(key) if key else None
    if head is None:
        return None
    return ObjectInfo(uri, key, int(head["ContentLength"]), str(head.get("ETag", "")).strip('"'))


def read_object(uri: str, settings: StorageSettings | None = None) -> bytes:
    """The bytes of one object; StorageError naming the URI when it is missing or unreadable."""
    bucket_name, key = parse_s3_uri(uri)
    bucket = _Bucket(bucket_name, settings or StorageSettings())
    data = bucket.get_bytes(key)
    if data is None:
        raise StorageError(f"no object {uri} at storage endpoint {bucket.endpoint}")
    return data


def delete_prefix(uri: str, settings: StorageSettings | None = None) -> int:
    """Delete every object under the folder ``uri``; returns how many were deleted."""
    bucket_name, key = parse_s3_uri(uri)
    if not key:
        raise ConfigError(f"refusing to delete a whole bucket ({uri})")
    bucket = _Bucket(bucket_name, settings or StorageSettings())
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
    bucket = _Bucket(bucket_name, settings or StorageSettings())
    bucket.check(create=create_bucket)
    files = [
        _File(
            p, _join(prefix, p.relative_to(local_dir).as_posix()), p.stat().st_size, sha256_file(p)
        )
        for p in sorted(local_dir.rglob("*"))
        if p.is_file()
    ]
    listed = {_join(prefix, name) for name in bucket.list(prefix)}
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
        if is_s3_uri(uri):
            bucket_name, prefix = parse_s3_uri(uri)
            bucket = _Bucket(bucket_name, settings or StorageSettings())
            bucket.check()
            if not bucket.download(prefix, tmp, check_labels=True):
                raise StorageError(f"nothing under {uri} at storage endpoint {bucket.endpoint}")
        else:
            if not Path(uri).is_dir():
                raise StorageError(f"{uri}: no such folder")
            shutil.copytree(uri, tmp, dirs_exist_ok=True)
    return local_dir


def read_json(uri_or_path: str | Path, settings: StorageSettings | None = None) -> Any:
    """A JSON document from S3 or a local file; StorageError when it is missing or unreadable."""
    where = str(uri_or_path)
    if is_s3_uri(where):
        bucket_name, key = parse_s3_uri(where)
        bucket = _Bucket(bucket_name, settings or StorageSettings())
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
        _Bucket(bucket_name, settings or StorageSettings()).put_bytes(key, body)
        return
    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- bundles -----------------------------------------------------------------------------------
def _bundle_entries(bundle_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's file entries, after checking the folder holds exactly those files.

    Contents are checked against the manifest's SHA-256 during the upload, not here, so a
    large bundle is read once.
    """
    files = read_manifest(bundle_dir).get("files", {})
    problems = [f"{n}: required but not in manifest" for n in REQUIRED_FILES if n not in files]
    for name, entry in files.items():
        path = bundle_dir / name
        if "/" in name or "\\" in name or name in (".", ".."):
            problems.append(f"{name}: not a plain file name")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{name}: size {path.stat().st_size} != manifest {entry['bytes']}")
    problems += [
        f"{p.name}: present but not in manifest"
        for p in sorted(bundle_dir.iterdir())
        if p.name not in files and p.name != MANIFEST_FILE
    ]
    if problems:
        raise BundleError(f"bundle {bundle_dir} failed verification: " + "; ".join(problems))
    return files


def _latest_record(run_id: str, uri: str, manifest_sha256: str) -> dict[str, str]:
    return {"run_id": run_id, "uri": uri, "manifest_sha256": manifest_sha256}


def _is_current(latest: Any, record: dict[str, str]) -> bool:
    return isinstance(latest, dict) and all(latest.get(k) == v for k, v in record.items())


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
    entries = _bundle_entries(bundle_dir)
    manifest_sha = sha256_file(bundle_dir / MANIFEST_FILE)
    if not is_s3_uri(dest_uri):
        return _publish_local(
            bundle_dir, Path(dest_uri), experiment, run_id, manifest_sha, overwrite, set_latest
        )

    settings = settings or StorageSettings()
    bucket_name, root = parse_s3_uri(dest_uri)
    run_key = _join(root, experiment, run_id)
    latest_key = _join(root, experiment, LATEST_FILE)
    bucket = _Bucket(bucket_name, settings)
    bundle_uri = bucket.uri(run_key)
    started = time.perf_counter()
    bucket.check(create=create_bucket)

    present = bucket.list(run_key)
    present_keys = {_join(run_key, name) for name in present}
    if MANIFEST_FILE in present:
        remote = bucket.get_bytes(_join(run_key, MANIFEST_FILE)) or b""
        remote_sha = hashlib.sha256(remote).hexdigest()
        if remote_sha != manifest_sha:
            if not overwrite:
                raise StorageError(
                    f"{bundle_uri} already holds a different bundle (manifest sha256 "
                    f"{remote_sha[:12]}…, this one {manifest_sha[:12]}…): publish under a new "
                    "run id, or pass --overwrite (overwrite=True)"
                )
            log.warning("replacing the different bundle at %s (overwrite)", bundle_uri)
            # Unmark it first: without its manifest the prefix is no bundle while it changes.
            bucket.delete([_join(run_key, MANIFEST_FILE)])

    files = [
        _File(bundle_dir / name, _join(run_key, name), entry["bytes"], entry["sha256"])
        for name, entry in sorted(entries.items())
    ]
    uploaded, skipped = bucket.sync(files, absent={f.key for f in files} - present_keys)
    stale = sorted(set(present) - set(entries) - {MANIFEST_FILE})
    if stale:
        log.info("removing %d object(s) not in this bundle's manifest: %s", len(stale), stale)
        bucket.delete([_join(run_key, name) for name in stale])
    manifest = _File(
        bundle_dir / MANIFEST_FILE,
        _join(run_key, MANIFEST_FILE),
        (bundle_dir / MANIFEST_FILE).stat().st_size,
        manifest_sha,
    )
    up, skip = bucket.sync([manifest], absent={manifest.key} - present_keys)
    uploaded, skipped = uploaded + up, skipped + skip

    # The bundle as a reader will list it: exactly the manifest's files, each verified above.
    listed = set(bucket.list(run_key))
    expected = set(entries) | {MANIFEST_FILE}
    if listed != expected:
        raise StorageError(
            f"{bundle_uri}: objects {sorted(listed ^ expected)} differ from the manifest after "
            "upload (a concurrent writer?); latest.json not updated"
        )
    record = _latest_record(run_id, bundle_uri, manifest_sha)
    latest_raw = bucket.get_bytes(latest_key) if set_latest else None
    try:
        latest = json.loads(latest_raw) if latest_raw else None
    except json.JSONDecodeError:
        latest = None
    if set_latest and not _is_current(latest, record):
        body = {**record, "experiment": experiment, "published_at": _now()}
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
        bucket.put_bytes(latest_key, data, absent=latest_raw is None)
    bucket.abort_stale_uploads(run_key)
    total = sum(f.size for f in files) + manifest.size
    log.info(
        "published %s: %d of %d file(s) uploaded, %d already present (%.1f MiB verified, "
        "%.1fs); %s -> %s",
        bundle_uri,
        uploaded,
        len(files) + 1,
        skipped,
        total / _MIB,
        time.perf_counter() - started,
        bucket.uri(latest_key),
        run_id,
    )
    return bundle_uri


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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
            _verify_bundle(target)
        except BundleError as exc:
            log.warning("repairing %s: %s", target, exc)
            same = False
    elif manifest.is_file() and not overwrite:
        raise StorageError(
            f"{target} already holds a different bundle (manifest sha256 "
            f"{sha256_file(manifest)[:12]}…, this one {manifest_sha[:12]}…): publish under a new "
            "run id, or pass --overwrite (overwrite=True)"
        )
    if not same:
        with atomic_directory(target) as tmp:
            for path in sorted(bundle_dir.iterdir()):
                shutil.copyfile(path, tmp / path.name)
            try:
                _verify_bundle(tmp)
            except BundleError as exc:
                raise BundleError(str(exc).replace(str(tmp), str(bundle_dir))) from None
    uri = str(target.resolve())
    if not set_latest:
        log.info("published %s (local); latest.json left as it was", uri)
        return uri
    record = _latest_record(run_id, uri, manifest_sha)
    latest_path = root / experiment / LATEST_FILE
    try:
        latest = json.loads(latest_path.read_text()) if latest_path.is_file() else None
    except json.JSONDecodeError:
        latest = None
    if not _is_current(latest, record):
        write_json(latest_path, {**record, "experiment": experiment, "published_at": _now()})
    log.info("published %s (local); %s -> %s", uri, latest_path, run_id)
    return uri


def promote_bundle(
    dest_uri: str, experiment: str, run_id: str, settings: StorageSettings | None = None
) -> str:
    """Point ``<dest_uri>/<experiment>/latest.json`` at an already published run, after
    pulling it and verifying every file; returns the bundle's URI."""
    from monolith.uri import join as join_uri

    check_segment("experiment", experiment)
    check_segment("run_id", run_id)
    uri = join_uri(dest_uri, experiment, run_id)
    with tempfile.TemporaryDirectory(prefix="monolith-promote-") as tmp:
        pulled = pull_bundle(uri, Path(tmp) / "bundle", settings)
        manifest_sha = sha256_file(pulled / MANIFEST_FILE)
    if not is_s3_uri(uri):
        uri = str(Path(uri).resolve())
    record = _latest_record(run_id, uri, manifest_sha)
    write_json(
        join_uri(dest_uri, experiment, LATEST_FILE),
        {**record, "experiment": experiment, "published_at": _now()},
        settings,
    )
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
        bucket = _Bucket(bucket_name, settings or StorageSettings())
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
    if not isinstance(run_id, str) or not _SEGMENT.fullmatch(run_id):
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
        if is_s3_uri(bundle_uri):
            bucket_name, prefix = parse_s3_uri(bundle_uri)
            bucket = _Bucket(bucket_name, settings)
            bucket.check()
            if not bucket.download(prefix, tmp, check_labels=False):
                raise BundleError(f"{bundle_uri}: no such bundle at {bucket.endpoint}")
        else:
            if not Path(bundle_uri).is_dir():
                raise BundleError(f"{bundle_uri}: no such bundle folder")
            shutil.copytree(bundle_uri, tmp, dirs_exist_ok=True)
        try:
            manifest = _verify_bundle(tmp)
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(tmp), bundle_uri)) from None
        if pinned and sha256_file(tmp / MANIFEST_FILE) != pinned:
            raise BundleError(
                f"bundle {bundle_uri}: manifest.json is not the one {LATEST_FILE} recorded "
                f"(sha256 {sha256_file(tmp / MANIFEST_FILE)[:12]}… != {pinned[:12]}…)"
            )
    log.info("pulled %s -> %s (%d files verified)", bundle_uri, dest, len(manifest["files"]) + 1)
    return dest
