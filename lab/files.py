"""Where the file system's refusals become one line.

Every file and folder the lab makes goes through `writing(path, ...)` (or `make_folder`,
and `lab.atomic.atomic_write`, which uses it): a run folder and its subfolders, config.yaml,
metrics.jsonl, summary.json, eval.json, media, the lock, checkpoints and their replay
chunks, `lab compare --out`, `lab sample --out`, a sweep's folder. An OSError there (a name
longer than the file system takes, a file where a folder should be, a full disk, a
read-only file system, no permission) becomes a `FileFault`: a LabError whose one line
names the path, the system's reason and the fix, which the CLI prints as `error: ...`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.api.errors import LabError

INSTEAD = "choose another path"

class FileFault(LabError):
    """A LabError the file system caused. `path` and `errno` let a caller that can go on
    without the file (a summary the checkpoint covers) warn instead of failing."""

    def __init__(self, message: str, path: Path, code: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = code


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system holding `folder` (or its nearest
    existing ancestor) takes; 255 where it cannot tell."""
    for where in (folder, *folder.parents):
        try:
            limit = os.pathconf(where, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
        return limit if limit > 0 else 255
    return 255


def _short(name: str) -> str:
    """A name cut for a message: a 300-character one would bury the line."""
    return name if len(name) <= 64 else f"{name[:40]}...{name[-8:]}"


def _shown(path: Path) -> str:
    """`path` for a message, its over-long names cut (`_short`)."""
    return os.sep.join(_short(part) for part in str(path).split(os.sep))


def _it(part: Path, path: Path) -> str:
    """`part` of `path` as the message names it, after naming `path` in full: "it" for the path
    itself, else the folder's name "in that path" (a message quotes no path twice)."""
    return "it" if part == path else f"'{_short(part.name)}' in that path"


def _lineage(path: Path) -> list[Path]:
    """`path` and its ancestors, the outermost first."""
    return [*reversed(path.parents), path]


def _explain(code: int | None, path: Path, other: str) -> str:
    """What is wrong at `path` and what to do (`other`: how to write elsewhere), for the
    errno the system gave."""
    if code == errno.ENAMETOOLONG:
        for part in _lineage(path):
            size, limit = len(part.name.encode()), name_max(part.parent)
            if size > limit:
                return (f"the name '{_short(part.name)}' is {size} bytes and names on this file system hold at most "
                        f"{limit}; choose a shorter one")
        return f"the path is {len(str(path).encode())} bytes, longer than the system takes; {other} (a shorter one)"
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in _lineage(path) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{_it(blocker, path)} is a file, not a folder; move it away or {other}"
        return f"it already exists; {other}"
    if code == errno.ENOENT:
        missing = next((p for p in _lineage(path) if not p.exists()), path)
        return f"'{missing}' does not exist and cannot be made in '{missing.parent}'; {other}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        full = "the disk is full" if code == errno.ENOSPC else "the disk quota is used up"
        return f"{full}; free space and try again, or {other}"
    if code == errno.EROFS:
        return f"the file system is read-only; make it writable or {other}"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to write there; make the folder writable or {other}"
    if code == errno.EISDIR:
        return f"it is a folder, not a file; move it away or {other}"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many files are open; raise the limit (`ulimit -n`) and try again"
    if code == errno.EIO:
        return "the disk reported an input/output error; check it (`dmesg`) and try again"
    return f"check the path and the disk, or {other}"


def _os_error(exc: BaseException | None) -> OSError | RuntimeError | None:
    """The file system's error behind `exc`: an OSError, or torch.save's RuntimeError for a
    failed write (its zip writer reports one without the OSError); None for any other error."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower() and "fail" in str(exc).lower():
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def fault(exc: BaseException, path: Path, doing: str = "write", instead: str = INSTEAD,
          then: str = "") -> FileFault | None:
    """The one line for `exc`, met while `doing` (a verb and what: "create run folder") at
    `path`: `cannot DOING 'PATH' (REASON): WHAT IS WRONG; FIX[; THEN]`. `instead` is how the
    user writes elsewhere ("choose another --runs-dir"); `then`, what follows (the older
    checkpoints are kept). None when `exc` is not the file system's."""
    cause = _os_error(exc)
    if cause is None:
        return None
    if isinstance(cause, OSError):
        code = cause.errno
        reason = cause.strerror or (os.strerror(code) if code else str(cause))
        explanation = _explain(code, path, instead)
    else:  # torch's writer: "[enforce fail at inline_container.cc:...] . PytorchStreamWriter failed writing ..."
        code, reason = None, str(cause).splitlines()[0][:120]
        explanation = f"most likely the disk is full; free space and try again, or {instead}"
    return FileFault(f"cannot {doing} '{_shown(path)}' ({reason}): {explanation}{f'; {then}' if then else ''}", path,
                     code)


@contextmanager
def writing(path: Path, doing: str = "write", instead: str = INSTEAD, then: str = "") -> Iterator[None]:
    """Run the block that makes or writes `path`; a file-system error in it is raised as
    the `FileFault` `fault` words (any other error passes unchanged)."""
    try:
        yield
    except FileFault:
        raise
    except (OSError, RuntimeError) as exc:
        found = fault(exc, path, doing, instead, then)
        if found is None:
            raise
        raise found from None


def make_folder(path: Path, doing: str = "create folder", instead: str = INSTEAD, parents: bool = True) -> Path:
    """`path` as a folder (made if missing; its missing parents too unless `parents` is
    False), or a FileFault."""
    with writing(path, doing, instead):
        path.mkdir(parents=parents, exist_ok=True)
    return path


def check_output(out: Path, flag: str, folder: bool = False) -> None:
    """A file (or, with `folder`, a folder) the user names for output (`--out a/b/c.png`) goes
    into a folder that exists: like cp and a shell's `>`, the lab makes no folders it was not
    asked for, so a typo in a path is one line before any work rather than a tree of new
    folders after it. A file's name must not be a folder's."""
    parent = out.parent
    if not folder and out.is_dir():
        raise LabError(f"{flag} '{out}' is a folder; name the file to write (in it, or elsewhere)")
    if parent.is_dir():
        return
    blocker = next((p for p in _lineage(parent) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise LabError(f"{flag} '{out}': '{blocker}' is a file, not a folder; choose another {flag}")
    raise LabError(f"{flag} '{out}': the folder '{parent}' does not exist; create it first (`mkdir -p {parent}`) "
                   f"or choose another {flag}")
