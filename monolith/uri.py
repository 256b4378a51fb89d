"""One parser for every location the platform is given: data sources, storage roots, outputs.

A location is either a local path or ``s3://bucket/key`` (any S3-compatible store: the
endpoint comes from the ``storage:`` settings, never from the URI). Every URI a job or the CLI
receives is parsed here once, at the edge, before anything is created or any cluster resource
is requested, so that a typo is one clear line instead of a folder named ``s3:`` in the
working directory or a traceback from deep inside a filesystem library.

What is refused, naming the setting and the value:

- an empty value;
- a scheme other than ``s3://`` or ``file://`` (``gs://``, ``https://``, ``s3a://`` ...);
- ``s3:`` without the two slashes (``s3:/bucket``, ``s3:bucket``), which would otherwise be
  taken for a relative local path;
- ``s3://`` without a bucket, or with a bucket name S3 does not allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from monolith.errors import ConfigError

S3_SCHEME = "s3://"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Location:
    """A parsed location: ``bucket`` is empty for a local path; ``key`` has no edge slashes."""

    bucket: str
    key: str

    @property
    def is_s3(self) -> bool:
        return bool(self.bucket)

    @property
    def has_glob(self) -> bool:
        return any(c in _GLOB_CHARS for c in self.key)

    @property
    def path(self) -> Path:
        """The local path (absolute); only for local locations."""
        if self.is_s3:
            raise ConfigError(f"{self} is an s3:// URI, not a local path")
        return Path(self.key)

    def join(self, *parts: str) -> Location:
        if not self.is_s3:
            return Location("", str(Path(self.key, *parts)))
        return Location(self.bucket, join_key(self.key, *parts))

    def __str__(self) -> str:
        if not self.is_s3:
            return self.key
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"


def parse_uri(value: object, what: str = "location") -> Location:
    """Parse a local path or ``s3://bucket/key``; local paths are made absolute.

    ``what`` names the setting in messages (``data.source``, ``--output``, ``tune.storage``).

    Raises:
        ConfigError: empty value, unsupported or malformed scheme, missing or invalid bucket.
    """
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} = {value!r} is invalid: expected a local path or s3://bucket/…")
    text = value.strip()
    match = _SCHEME.match(text)
    # A Windows drive letter ("C:\...") is a path, not a scheme.
    if match and len(match.group(1)) > 1:
        scheme, slashes = match.group(1).lower(), match.group(2)
        if scheme == "s3" and not slashes:
            raise ConfigError(
                f"{what} = {text!r} is not a valid S3 URI: write s3://bucket/prefix (two slashes)"
            )
        if scheme == "file" and slashes:
            return Location("", str(Path(text[len("file://") :]).expanduser().resolve()))
        if scheme != "s3":
            raise ConfigError(
                f"{what} = {text!r}: unsupported scheme '{scheme}://'; use a local path or "
                "s3://bucket/prefix (any S3-compatible store: set storage.endpoint_url or "
                "AWS_ENDPOINT_URL for MinIO and others)"
            )
        rest = text[match.end() :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ConfigError(f"{what} = {text!r} names no bucket: expected s3://bucket/prefix")
        if not _BUCKET.fullmatch(bucket):
            raise ConfigError(
                f"{what} = {text!r}: bucket name {bucket!r} is invalid: 3-63 lowercase letters, "
                "digits, '.', '-'"
            )
        return Location(bucket, key.strip("/"))
    return Location("", str(Path(text).expanduser().resolve()))


def is_s3_uri(value: object) -> bool:
    """Whether ``value`` is meant as an S3 URI (``s3:`` in any form; parse it to validate)."""
    return isinstance(value, str) and value.strip().lower().startswith("s3:")


def parse_s3_uri(uri: str, what: str = "location") -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; anything else is a ConfigError."""
    location = parse_uri(uri, what)
    if not location.is_s3:
        raise ConfigError(f"{uri!r} is not an s3:// URI (expected s3://bucket/prefix)")
    return location.bucket, location.key


def join_key(*parts: str) -> str:
    """Join object-key parts with one ``/`` each, dropping empty parts and edge slashes."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def join(root: str | Path, *parts: str) -> str:
    """Join path parts onto a local folder or an ``s3://`` URI (the result as a string)."""
    root = str(root)
    if is_s3_uri(root):
        return str(parse_uri(root).join(*parts))
    return str(Path(root, *parts))


def normalise(value: object, what: str = "location") -> str:
    """The canonical text of a location: an absolute path, or ``s3://bucket/key``."""
    return str(parse_uri(value, what))
