"""Atomic folder writes: build in a temporary sibling, rename into place.

Used by every writer of a folder-shaped output (prepared datasets, bundles), so a crash or an
error never leaves a half-written folder where a complete one is expected.
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
