"""How to reach the object store: the config's ``storage:`` section, validated, and the digest
of the AWS_* environment that clients and filesystems are cached by.

Credentials come only from the standard boto3 chain (environment, profile, web identity): the
config refuses them, and they are never logged or written.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from s3transfer.utils import ChunksizeAdjuster

from monolith.config import build_section, check_choice, check_float, check_int, fail
from monolith.errors import ConfigError

if TYPE_CHECKING:
    from monolith.config import MonolithConfig

ADDRESSING_STYLES = ("auto", "path", "virtual")
MIB = 1 << 20
_ENDPOINT = re.compile(r"https?://[^\s/@]+(/[^\s]*)?")
_CREDENTIAL_WORDS = ("secret", "password", "token", "access_key", "credential")


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
        if isinstance(raw, Mapping):
            secret = sorted(k for k in raw if any(w in str(k).lower() for w in _CREDENTIAL_WORDS))
            if secret:
                raise ConfigError(
                    f"{where}.{secret[0]}: credentials are not accepted in config (value not "
                    "shown); provide them through the standard AWS chain: AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity token"
                )
            raw = dict(raw)
        return build_section(cls, raw, where).validate(where)

    @classmethod
    def from_config(cls, cfg: MonolithConfig) -> StorageSettings:
        """From a ``MonolithConfig`` (its ``storage:`` section, kept in ``cfg.extra``)."""
        return cls.from_mapping(cfg.extra.get("storage") or {})

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
            multipart_threshold=self.multipart_threshold_mb * MIB,
            multipart_chunksize=self.multipart_chunksize_mb * MIB,
            max_concurrency=self.max_concurrency,
            # Downloads only (uploads are ours); the classic manager, whichever is installed.
            preferred_transfer_client="classic",
        )

    def part_size(self, size: int) -> int | None:
        """Part size for uploading ``size`` bytes (s3transfer's rule); None: a single PUT."""
        if size < self.multipart_threshold_mb * MIB:
            return None
        return ChunksizeAdjuster().adjust_chunksize(self.multipart_chunksize_mb * MIB, size)


def aws_environment_digest() -> str:
    """A digest of the AWS_* environment the credential chain and endpoint resolve from."""
    digest = hashlib.sha256()
    for name in sorted(n for n in os.environ if n.startswith("AWS_")):
        digest.update(f"{name}={os.environ[name]}\0".encode())
    return digest.hexdigest()
