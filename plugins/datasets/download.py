"""Fetch a file from the first mirror that answers, with a progress bar, atomically.

A partial download never lands under the final name (it is written to `NAME.part` and
renamed), so an interrupted fetch cannot leave a truncated file that looks complete.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

CHUNK = 1 << 16


def fetch(name: str, mirrors: Sequence[str], dest: Path, timeout: float = 30.0) -> list[str]:
    """Download `name` from the first working mirror into `dest/name`.

    Returns [] on success, otherwise one 'url: reason' line per mirror that failed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / name
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            _fetch_url(url, target, timeout)
            return []
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {reason}")
    return failures


def _fetch_url(url: str, target: Path, timeout: float) -> None:
    partial = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "arcade-lab"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
            ) as progress:
                task = progress.add_task(f"downloading {target.name}", total=total)
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
