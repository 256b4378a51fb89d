"""The boto3 S3 client, kept per settings and environment, and what its errors mean: each boto
error becomes one ``StorageError`` line that names the endpoint and bucket, or is told apart as
transient (retried) or fatal.

botocore logs signed request headers (with the access key id) at DEBUG, so its logger is held
at INFO unless a level was set for it.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import boto3
import botocore.loaders
import botocore.session
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

from monolith.errors import MonolithError, StorageError
from monolith.storage.settings import StorageSettings, aws_environment_digest

log = logging.getLogger(__name__)

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
# The errors boto3, botocore and s3transfer raise: what ``translate`` turns into StorageError.
BOTO_ERRORS = (BotoCoreError, ClientError, RetriesExceededError)


def _hold_botocore_debug() -> None:
    # botocore's DEBUG records include the signed request (Authorization: ... Credential=<key
    # id>/...). A -v run must not print it, so botocore stays at INFO unless set explicitly.
    botocore_log = logging.getLogger("botocore")
    if botocore_log.level == logging.NOTSET:
        botocore_log.setLevel(logging.INFO)


_CLIENTS: dict[tuple[StorageSettings, bool, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


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
    key = (settings, sign_payload, aws_environment_digest())
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


# -- errors ----------------------------------------------------------------------------------
class Mismatch(Exception):
    """An uploaded object differs from its file (transient until the attempts run out)."""


def status(exc: ClientError) -> int | None:
    """The HTTP status of a refused request."""
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def code(exc: ClientError) -> str:
    """The S3 error code of a refused request (``NoSuchBucket``, ``AccessDenied`` ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: connection trouble, 5xx, throttling, a mismatch."""
    if isinstance(exc, RetriesExceededError):
        exc = exc.last_exception
    if isinstance(exc, Mismatch | BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        return (status(exc) or 0) >= 500 or code(exc) in _TRANSIENT_CODES
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


def translate(
    exc: BaseException,
    doing: str,
    *,
    bucket: str,
    endpoint: str,
    settings: StorageSettings,
    key: str | None = None,
) -> MonolithError:
    """``exc``, raised while ``doing`` on ``bucket`` (about object ``key``), as one line."""
    if isinstance(exc, MonolithError):
        return exc
    if isinstance(exc, RetriesExceededError):
        exc = exc.last_exception
    where = f"storage endpoint {endpoint}, bucket '{bucket}'"
    log.debug("%s failed: %s: %s", doing, type(exc).__name__, exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            f"no AWS credentials found ({where}) while {doing}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity token"
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StorageError(
            f"cannot reach {where} while {doing}: {_unreachable_reason(exc, settings)} "
            f"({settings.max_attempts} attempt(s) per request)"
        )
    if isinstance(exc, ClientError):
        return _refused(exc, doing, where, bucket, endpoint, key)
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{where}: {doing} failed: {exc}")
    return StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {exc}")


def _refused(
    exc: ClientError, doing: str, where: str, bucket: str, endpoint: str, key: str | None
) -> StorageError:
    got, http = code(exc), status(exc)
    if got in _BAD_CREDENTIALS:
        return StorageError(
            f"{where} rejected the credentials ({got}) while {doing}: check "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the web identity"
        )
    if got in ("AccessDenied", "403") or http == 403:
        return StorageError(
            f"{where} denied access ({got or 'HTTP 403'}) while {doing}: the "
            "credentials are wrong, or lack permission on this bucket"
        )
    if got == "NoSuchBucket" or (key is None and http == 404):
        return StorageError(
            f"bucket '{bucket}' does not exist at storage endpoint {endpoint}: "
            "create it, or pass --create-bucket (create_bucket=True)"
        )
    if key is not None and http == 404:
        return StorageError(f"no object s3://{bucket}/{key} at storage endpoint {endpoint}")
    return StorageError(f"{where} refused {doing}: {got or 'error'} (HTTP {http})")
