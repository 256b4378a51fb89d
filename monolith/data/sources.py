"""Where market data comes from: files, folders and globs on local disk or under ``s3://``.

A source resolves to a list of ``SourceFile``: every data file it names, each known by its
location, size and version (the S3 ETag, or the local modification time) WITHOUT reading it,
so a dataset can be fingerprinted ("prepare once") and its files spread over a cluster before
any byte is downloaded. Accepted, locally and on S3 alike:

- one file: ``bars.csv``, ``s3://bucket/bars/BTCUSDT.parquet``;
- a folder or prefix: every data file under it, recursively (``s3://bucket/bars/``);
- a glob: ``data/*.csv``, ``s3://bucket/bars/**/*.parquet`` (``*`` stays within a folder,
  ``**`` crosses folders);
- a hive-partitioned dataset: ``…/symbol=BTCUSDT/part-0.parquet`` (also ``instrument=`` and
  ``ticker=``): the partition value names the symbol of a file that has no symbol column;
  other partition keys (``year=2024``) are only folders.

Data files are ``.csv``/``.tsv``, ``.parquet``/``.pq``, and CSVs compressed as ``.gz``
or in a one-file ``.zip`` (as data.binance.vision publishes them). Names starting with ``.``
or ``_`` (``_SUCCESS``, ``.DS_Store``) are not data; other files found under a folder are
skipped and counted in the log.
"""

from __future__ import annotations

import glob as globlib
import gzip
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from monolith.errors import DataError
from monolith.storage import StorageSettings
from monolith.uri import Location, is_s3_uri, parse_uri

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED_SUFFIXES = (".gz", ".zip")
# Hive partition keys that name the instrument of the files below them.
SYMBOL_PARTITION_KEYS = ("symbol", "instrument", "ticker")
_READ_CHUNK_BYTES = 1 << 22


@dataclass(frozen=True)
class SourceFile:
    """One data file of a source: where it is and which version, not its content."""

    uri: str  # an absolute local path or s3://bucket/key
    size: int
    version: str  # the S3 ETag, or the local mtime in ns: what "changed" means
    partitions: tuple[tuple[str, str], ...] = ()  # hive key=value folders above it

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def compression(self) -> str | None:
        suffix = _suffixes(self.name)[1]
        return suffix.lstrip(".") if suffix else None

    @property
    def format(self) -> str:
        return "parquet" if _suffixes(self.name)[0] in PARQUET_SUFFIXES else "csv"

    @property
    def stem(self) -> str:
        """The name without its data and compression suffixes: ``BTCUSDT.csv.gz`` -> ``BTCUSDT``."""
        data, compressed = _suffixes(self.name)
        if not data and self.name.lower().endswith(".txt"):
            data = ".txt"  # named explicitly: Yahoo's and Stooq's CSV text (nvda.txt -> nvda)
        return self.name[: len(self.name) - len(data) - len(compressed)]

    @property
    def symbol_hint(self) -> str | None:
        """The symbol its hive folders name (``symbol=BTCUSDT``), if any."""
        for key, value in reversed(self.partitions):
            if key.lower() in SYMBOL_PARTITION_KEYS:
                return value
        return None

    def fingerprint(self) -> list:
        return [self.uri, self.size, self.version]

    def __str__(self) -> str:
        return self.uri


def _suffixes(name: str) -> tuple[str, str]:
    """``(data suffix, compression suffix)``, lower case; ``("", "")`` when not a data file."""
    lower = name.lower()
    compressed = next((s for s in COMPRESSED_SUFFIXES if lower.endswith(s)), "")
    base = lower[: len(lower) - len(compressed)]
    data = next((s for s in (*CSV_SUFFIXES, *PARQUET_SUFFIXES) if base.endswith(s)), "")
    if compressed and data in PARQUET_SUFFIXES:
        return "", ""  # Parquet compresses itself; a gzipped Parquet is not something we read
    if compressed == ".zip" and not data:
        data = ".csv"  # data.binance.vision: BTCUSDT-1h-2024-01.zip holds BTCUSDT-1h-2024-01.csv
    return data, compressed if data else ""


def is_data_file(name: str) -> bool:
    return bool(_suffixes(name)[0]) and not name.startswith((".", "_"))


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _partitions(relative: str) -> tuple[tuple[str, str], ...]:
    """Hive ``key=value`` folders of a path relative to the source root (values URL-decoded)."""
    out = []
    for part in relative.split("/")[:-1]:
        key, sep, value = part.partition("=")
        if sep and key and value:
            out.append((key, unquote(value)))
    return tuple(out)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob semantics of ``glob.glob(recursive=True)`` for object keys."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _literal_prefix(key: str) -> str:
    """The folders of ``key`` before its first segment holding a glob character."""
    parts = key.split("/")
    literal = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        literal.append(part)
    return "/".join(literal)


def resolve_sources(
    source: str | Path, settings: StorageSettings | None = None, what: str = "data.source"
) -> list[SourceFile]:
    """The data files ``source`` names, sorted by location; DataError when it names none.

    Raises:
        ConfigError: ``source`` is not a valid location (bad scheme, no bucket).
        StorageError: the bucket is missing, access is denied, the endpoint is unreachable.
        DataError: nothing there is a data file.
    """
    location = parse_uri(source, what)
    if location.is_s3:
        files, skipped, where = _resolve_s3(location, settings)
    else:
        files, skipped, where = _resolve_local(str(source), location)
    if skipped:
        log.info(
            "%s: skipped %d file(s) that are not data (.csv/.parquet/...): %s",
            where,
            len(skipped),
            ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""),
        )
    if not files:
        raise DataError(
            f"no market data found at {where}: expected .csv/.parquet files (optionally "
            ".gz/.zip), a folder or s3:// prefix holding such files, or a glob matching them"
        )
    return sorted(files, key=lambda f: f.uri)


def _resolve_local(text: str, location: Location) -> tuple[list[SourceFile], list[str], str]:
    path = location.path
    if path.is_file():
        return [_local_file(path, path.parent)], [], f"file {path}"
    if path.is_dir():
        candidates = sorted(p for p in path.rglob("*") if p.is_file())
        root, where = path, f"folder {path}"
    elif location.has_glob:
        expanded = str(Path(text).expanduser())
        candidates = sorted(Path(p) for p in globlib.glob(expanded, recursive=True))
        candidates = [p for p in candidates if p.is_file()]
        root = Path(_literal_prefix(str(path)) or "/")
        where = f"glob {text!r}"
    else:
        raise DataError(f"no market data found at {text!r}: no such file, folder or glob match")
    files, skipped = [], []
    for p in candidates:
        relative = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        if _hidden(relative):
            continue
        if is_data_file(p.name):
            files.append(_local_file(p, root))
        else:
            skipped.append(relative)
    return files, skipped, where


def _local_file(path: Path, root: Path) -> SourceFile:
    stat = path.stat()
    relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return SourceFile(
        str(path.resolve()), stat.st_size, str(stat.st_mtime_ns), _partitions(relative)
    )


def _resolve_s3(
    location: Location, settings: StorageSettings | None
) -> tuple[list[SourceFile], list[str], str]:
    from monolith import storage

    settings = settings or StorageSettings()
    uri = str(location)
    if location.has_glob:
        base = _literal_prefix(location.key)
        pattern = _glob_regex(location.key)
        listed = storage.list_objects(
            str(Location(location.bucket, base)), settings, literal_prefix=not base
        )
        chosen = [o for o in listed if pattern.match(o.key)]
        where = f"{uri} (glob)"
    else:
        single = storage.object_info(uri, settings) if location.key else None
        if single is not None and is_data_file(location.key.rsplit("/", 1)[-1]):
            parent = location.key.rsplit("/", 1)[0] if "/" in location.key else ""
            base, chosen, where = parent, [single], uri
        else:
            base = location.key
            chosen = storage.list_objects(uri, settings)
            where = f"{uri}/" if not uri.endswith("/") else uri
    files, skipped = [], []
    for obj in chosen:
        relative = obj.key[len(base) :].lstrip("/") if base else obj.key
        if not relative or relative.endswith("/") or _hidden(relative):
            continue
        if is_data_file(relative.rsplit("/", 1)[-1]):
            files.append(SourceFile(obj.uri, obj.size, obj.etag, _partitions(relative)))
        else:
            skipped.append(relative)
    return files, skipped, where


def read_source(file: SourceFile, settings: StorageSettings | None = None) -> tuple[bytes, str]:
    """The file's data bytes (decompressed) and the SHA-256 of the bytes as published."""
    if is_s3_uri(file.uri):
        from monolith import storage

        raw: bytes | bytearray = storage.read_object(file.uri, settings)
        digest = hashlib.sha256(raw).hexdigest()
    else:
        raw, digest = _read_local(Path(file.uri))
    return _decompress(file, raw), digest


def _read_local(path: Path) -> tuple[bytearray, str]:
    """The file's bytes and SHA-256, hashed while reading so the file is read once.

    Read into one buffer of the file's size: collecting chunks and joining them would hold
    the file twice at the peak.
    """
    digest = hashlib.sha256()
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened: {exc.strerror or exc}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        data = bytearray(size)
        view = memoryview(data)
        filled = 0
        while filled < size and (got := handle.readinto(view[filled : filled + _READ_CHUNK_BYTES])):
            digest.update(view[filled : filled + got])
            filled += got
        view.release()
        if filled < size:  # the file shrank while being read
            del data[filled:]
        # A file that grew while being read: take the rest too.
        while chunk := handle.read(_READ_CHUNK_BYTES):
            digest.update(chunk)
            data += chunk
    return data, digest.hexdigest()


def _decompress(file: SourceFile, raw: bytes | bytearray) -> bytes | bytearray:
    if file.compression == "gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{file.uri}: not a readable gzip file: {exc}") from None
    if file.compression == "zip":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                members = [
                    m for m in archive.infolist() if not m.is_dir() and is_data_file(m.filename)
                ]
                if len(members) != 1:
                    names = [m.filename for m in archive.infolist()]
                    raise DataError(
                        f"{file.uri}: a .zip must hold exactly one .csv file, it holds {names}"
                    )
                return archive.read(members[0])
        except zipfile.BadZipFile as exc:
            raise DataError(f"{file.uri}: not a readable zip file: {exc}") from None
    return raw


def source_fingerprint(files: list[SourceFile]) -> list[list]:
    """What a prepared dataset depends on, per file: location, size and version."""
    return [f.fingerprint() for f in files]
