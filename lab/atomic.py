"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half; a
file system that refuses the write is one line (`lab.files`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lab.files import INSTEAD, writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; run files get the mode any new file gets (0644 under umask 022),
# so collaborators on a shared machine can read each other's runs
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], object], doing: str = "write", instead: str = INSTEAD,
                 then: str = "") -> None:
    """Call `write(handle)` on a temp file beside `path` (its folder made if missing), flush it
    to disk, rename it over `path` (what `write` returns, such as a byte count, is ignored).
    A file-system error is a `lab.files.FileFault` (`doing`, `instead`, `then`: its wording)."""
    with writing(path, doing, instead, then):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
