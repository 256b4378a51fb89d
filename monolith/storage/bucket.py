"""One bucket on one endpoint: list, read, write, delete, download, and the verified upload
engine; every boto error leaves as a one-line StorageError.

Integrity. Every object goes up with an S3 additional checksum (SHA-256 of each request's
bytes, hashed in the same read that checks the file's SHA-256 against the one the caller says
it must hold, e.g. a manifest's entry) and the file's hex SHA-256 as metadata
(``x-amz-meta-sha256``). After the upload the server's checksum of what it stored is compared
with ours: from the upload's response where the server sends one (S3, MinIO), else from a HEAD
(size, label and checksum). A single-part object's checksum *is*
the file's SHA-256. A multipart object's is composite (the SHA-256 of its parts' SHA-256s,
shown as ``…-N``), compared with the composite of the parts we sent; the file's SHA-256 is
checked on the same bytes before the upload is completed, so a file that does not match what
it must hold never becomes an object. A server that reports no checksum is verified by reading
back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import create_transfer_manager
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError

from monolith.errors import BundleError, MonolithError, StorageError
from monolith.storage.client import (
    BOTO_ERRORS,
    Mismatch,
    code,
    is_transient,
    s3_client,
    status,
    translate,
)
from monolith.storage.digest import SHA256_METADATA, sha256_file
from monolith.storage.settings import MIB, StorageSettings
from monolith.uri import join_key

log = logging.getLogger(__name__)

# Whole-file attempts on top of botocore's per-request retries: a multipart upload that lost
# a part is aborted by s3transfer and must start again; so must one that fails verification.
FILE_ATTEMPTS = 3
_FILE_BACKOFF_S = 0.5


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: what a fingerprint needs, known without downloading it."""

    uri: str
    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int
    sha256: str  # hex: what the object must hold (the manifest's entry, or the file's hash)


def local_mismatch(file: LocalFile, sha256_hex: str) -> BundleError:
    return BundleError(
        f"local file {file.path} changed or does not match its manifest: sha256 "
        f"{sha256_hex[:12]}… != {file.sha256[:12]}…"
    )


class Bucket:
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
        """``exc`` as one StorageError line naming this endpoint and bucket."""
        if isinstance(exc, Mismatch):
            where = f"storage endpoint {self.endpoint}, bucket '{self.name}'"
            return StorageError(f"{where}: {exc} after {FILE_ATTEMPTS} upload attempts")
        return translate(
            exc, doing, bucket=self.name, endpoint=self.endpoint, settings=self.settings, key=key
        )

    @contextmanager
    def errors(self, doing: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except BOTO_ERRORS as exc:
            raise self.error(exc, doing, key) from None

    # bucket-level
    def check(self, *, create: bool = False) -> None:
        """Preflight: the bucket exists and our credentials may use it (or create it)."""
        try:
            self.client.head_bucket(Bucket=self.name)
            return
        except ClientError as exc:
            if not (create and status(exc) == 404):
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
            if code(exc) != "BucketAlreadyOwnedByYou":
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
            if status(exc) == 404 and code(exc) != "NoSuchBucket":
                return None
            raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if status(exc) == 404 and code(exc) != "NoSuchBucket":
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
            file = LocalFile(Path(tmp), key, len(data), hashlib.sha256(data).hexdigest())
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

    def _composite(self, file: LocalFile) -> tuple[str, int]:
        """The local file's composite SHA-256 (base64) and part count, as S3 computes them.

        The same read checks the file's SHA-256 against what the object must hold, so a
        composite match ties the remote object to the SHA-256 it must hold.
        """
        part_size = self.settings.part_size(file.size) or file.size
        cached = self._composites.get((file.path, part_size))
        if cached:
            return cached
        full, composite, parts = hashlib.sha256(), hashlib.sha256(), 0
        buffer = memoryview(bytearray(min(8 * MIB, part_size)))
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
            raise local_mismatch(file, full.hexdigest())
        out = (base64.b64encode(composite.digest()).decode(), parts)
        self._composites[(file.path, part_size)] = out
        return out

    def _problem(self, file: LocalFile, head: dict[str, Any] | None) -> str | None:
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
                raise local_mismatch(file, local)
            return f"server checksum {remote[:12]}… != {file.sha256[:12]}…"
        expected, expected_parts = self._composite(file)
        if parts is not None and parts != expected_parts:
            return f"{parts} parts, expected {expected_parts}"
        if value != expected:
            return f"composite checksum {value[:12]}… != local {expected[:12]}…"
        return None

    def _read_back_problem(self, file: LocalFile) -> str | None:
        if not self._told_read_back:
            log.info("%s reports no SHA-256 checksums: verifying by reading back", self.endpoint)
            self._told_read_back = True
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.name, Key=file.key)["Body"]
        for chunk in body.iter_chunks(MIB):
            digest.update(chunk)
        if digest.hexdigest() != file.sha256:
            return f"read-back sha256 {digest.hexdigest()[:12]}… != {file.sha256[:12]}…"
        return None

    def sync(self, files: list[LocalFile], *, absent: Collection[str] = ()) -> tuple[int, int]:
        """Make every object equal to its file, verified; returns (uploaded, already there).

        Each attempt first checks what is already there (so a retry re-sends only what is
        missing or wrong; keys in ``absent``, just listed as missing, are not asked about the
        first time), then uploads and verifies the rest. Transient failures (connection, 5xx,
        throttling, a verification mismatch) are retried with backoff; others raise.
        """
        todo, sent, attempt = list(files), set(), 0
        while True:
            attempt += 1
            failures: list[tuple[LocalFile, BaseException]] = []
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
            file, exc = next(((f, e) for f, e in failures if not is_transient(e)), failures[0])
            if not is_transient(exc) or attempt == FILE_ATTEMPTS:
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

    def _upload_and_verify(self, files: list[LocalFile]) -> list[tuple[LocalFile, BaseException]]:
        """Upload ``files`` (up to ``max_concurrency`` requests in flight), each verified.

        boto3's managed transfer cannot take per-part checksums it did not compute, so it would
        hash every byte once more than we must: here each part is read once, hashed once for
        its checksum header and once into the file's SHA-256, and sent as it is.
        """
        failures: list[tuple[LocalFile, BaseException]] = []
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

    def _put_file(self, file: LocalFile) -> None:
        data = file.path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest.hex() != file.sha256:
            raise local_mismatch(file, digest.hex())
        checksum = base64.b64encode(digest).decode()
        out = self.uploader.put_object(
            Bucket=self.name,
            Key=file.key,
            Body=data,
            ChecksumSHA256=checksum,
            Metadata={SHA256_METADATA: file.sha256},
        )
        self._verify(file, out.get("ChecksumSHA256"), checksum)

    def _multipart_file(self, file: LocalFile, pool: ThreadPoolExecutor) -> None:
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
                raise local_mismatch(file, full.hexdigest())
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
            raise Mismatch(
                f"{self.uri(key)} part {number}: server checksum {reported} != {checksum}"
            )
        return {"PartNumber": number, "ETag": out["ETag"], "ChecksumSHA256": checksum}

    def _verify(self, file: LocalFile, reported: str | None, expected: str) -> None:
        """The server's checksum of what it stored against ours; HEAD when it sent none."""
        if reported:
            # S3 and MinIO answer with the checksum of the stored object (a composite as
            # "<base64>-<parts>"), computed from the bytes they received.
            value, _, parts = reported.partition("-")
            want, _, want_parts = expected.partition("-")
            if value == want and (not parts or parts == want_parts):
                return
            raise Mismatch(
                f"{self.uri(file.key)} differs after upload: checksum {reported} != {expected}"
            )
        problem = self._problem(file, self._head(file.key))
        if problem:
            raise Mismatch(f"{self.uri(file.key)} differs after upload: {problem}")

    def download(self, prefix: str, local: Path, *, check_labels: bool) -> int:
        """Download every object under ``prefix/`` into ``local``; returns the count.

        Sizes are always checked; with ``check_labels`` each object with a sha256 label is
        hashed and compared with it (a caller that checks the contents itself, against a
        manifest, leaves it off).
        """
        # "folder/" keys are console-made folder markers, not files
        objects = {k: v for k, v in self.list(prefix).items() if k and not k.endswith("/")}
        for name in objects:
            if any(part in ("", ".", "..") for part in name.split("/")):
                raise StorageError(
                    f"refusing object {self.uri(join_key(prefix, name))}: unsafe name"
                )
        with (
            self.errors(f"downloading {self.uri(prefix)}"),
            create_transfer_manager(self.client, self.settings.transfer_config()) as manager,
        ):
            transfers = []
            for name in sorted(objects):
                target = local.joinpath(*name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                key = join_key(prefix, name)
                transfers.append(manager.download(self.name, key, str(target)))
            for transfer in transfers:
                transfer.result()
        for name, size in objects.items():
            path = local.joinpath(*name.split("/"))
            if path.stat().st_size != size:
                raise StorageError(f"{self.uri(join_key(prefix, name))}: downloaded size differs")
            if check_labels:
                head = self.head(join_key(prefix, name)) or {}
                label = (head.get("Metadata") or {}).get(SHA256_METADATA)
                if label and sha256_file(path) != label:
                    raise StorageError(
                        f"{self.uri(join_key(prefix, name))}: content does not match its sha256 "
                        f"label {label[:12]}… (corrupted in storage?)"
                    )
        return len(objects)
