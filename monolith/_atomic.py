"""Atomic writes: build a folder or a file in a temporary sibling, rename it into place.

Used by every writer of a folder-shaped output (prepared datasets, bundles) and of a single
local file (small JSON documents, the synthetic data file), so a crash or an error never leaves
a half-written output where a complete one is expected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(output: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``output``; on success it replaces ``output``.

    On any exception the temporary folder is removed and ``output`` is left as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs are meant to be shared
    try:
        yield tmp
        if output.exists():
            trash = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, trash)
            os.replace(tmp, output)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(output: Path) -> Iterator[Path]:
    """Yield a temporary sibling path of ``output`` to write; on success it replaces ``output``.

    The file is made readable by all (``mkstemp`` makes it private); on any exception it is
    removed and ``output`` is left as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomically(output: Path, data: bytes) -> None:
    """Write ``data`` to ``output`` through ``atomic_file``."""
    with atomic_file(output) as tmp:
        tmp.write_bytes(data)
