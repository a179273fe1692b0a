"""Read back what an offline W&B run wrote, without a server or the wandb internals.

A `.wandb` file is the LevelDB log format with a W&B file header:

    header := ident ":W&B" (4 bytes) | magic 0xBEE1 (uint16 LE) | version 0 (uint8)
    block  := 32 KiB, counted from the start of the file (the header sits in block 0)
    chunk  := crc32 (uint32 LE) | length (uint16 LE) | type (uint8) | data[length]

`type` is FULL=1, FIRST=2, MIDDLE=3, LAST=4; a record too big for the rest of a block is
split into FIRST, MIDDLE..., LAST chunks, and a block tail shorter than a chunk header is
zero padding. W&B checksums with the IEEE CRC-32 (zlib.crc32) of the type byte and data,
not LevelDB's masked CRC-32C. Each reassembled record is one serialized
`wandb.proto.wandb_internal_pb2.Record`.

Used by the tests to check that the W&B history matches metrics.jsonl, and by users who
want to inspect an offline run before `wandb sync`.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wandb.proto.wandb_internal_pb2 import Record

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT, FILE_MAGIC, FILE_VERSION = b":W&B", 0xBEE1, 0
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_LEN = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """The file is not a `.wandb` log or is corrupt where it is not merely truncated."""


def _payloads(data: bytes) -> Iterator[bytes]:
    """Reassemble record payloads from the chunks of a LevelDB log (after the file header).

    A truncated final chunk (a run killed mid-write) ends the stream quietly; a checksum
    mismatch or an impossible chunk sequence raises, so silent corruption never passes.
    """
    pos = FILE_HEADER.size
    pending: list[bytes] | None = None
    while pos < len(data):
        block_left = BLOCK_LEN - pos % BLOCK_LEN
        if block_left < CHUNK_HEADER.size:  # zero-padded block trailer
            pos += block_left
            continue
        if pos + CHUNK_HEADER.size > len(data):
            return
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # preallocated or padded tail of a block
            pos += block_left
            continue
        if CHUNK_HEADER.size + length > block_left:
            raise WandbFileError(f"chunk at byte {pos} runs past the end of its 32 KiB block")
        start, end = pos + CHUNK_HEADER.size, pos + CHUNK_HEADER.size + length
        if end > len(data):
            return
        body = data[start:end]
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise WandbFileError(f"checksum mismatch in chunk at byte {pos}")
        pos = end
        if kind == FULL and pending is None:
            yield body
        elif kind == FIRST and pending is None:
            pending = [body]
        elif kind == MIDDLE and pending is not None:
            pending.append(body)
        elif kind == LAST and pending is not None:
            pending.append(body)
            yield b"".join(pending)
            pending = None
        else:
            raise WandbFileError(f"unexpected chunk type {kind} at byte {pos - length}")


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield every protobuf `Record` in a `.wandb` file, in write order."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size:
        raise WandbFileError(f"{path}: too short for a .wandb file")
    ident, magic, version = FILE_HEADER.unpack_from(data)
    if (ident, magic, version) != (FILE_IDENT, FILE_MAGIC, FILE_VERSION):
        raise WandbFileError(f"{path}: not a .wandb file (header {data[:7]!r})")
    for payload in _payloads(data):
        record = Record()
        record.ParseFromString(payload)
        yield record


def _assign(target: dict[str, Any], item: Any, value: Any) -> None:
    """Store `value` under the item's key: flat (`key`) or a path into nested dicts
    (`nested_key`, e.g. ["_wandb", "runtime"]); a one-element path is a flat key."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _remove(target: dict[str, Any], item: Any) -> None:
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.get(part, {})
    target.pop(path[-1], None)


def _history_value(item: Any) -> Any:
    """Decode one history item: JSON text by default, typed fields with other encodings."""
    if item.value_json:
        return json.loads(item.value_json)
    which = item.WhichOneof("value")
    if which is None or which == "none":
        return None
    value = getattr(item, which)
    return json.loads(value) if which == "json" else value


def _merge(target: dict[str, Any], record: Any) -> None:
    """Apply a config/summary record's updates and removals to `target`."""
    for item in record.update:
        _assign(target, item, json.loads(item.value_json))
    for item in record.remove:
        _remove(target, item)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Every history row (one per `run.log` commit), with W&B's own `_step`, `_runtime`,
    `_timestamp` fields kept so callers can drop or check them."""
    rows = []
    for rec in read_records(path):
        if rec.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _assign(row, item, _history_value(item))
            rows.append(row)
    return rows


def read_config(path: str | Path) -> dict[str, Any]:
    """The run config as the last write left it (including W&B's own `_wandb` entry)."""
    config: dict[str, Any] = {}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            _merge(config, rec.run.config)
        elif kind == "config":
            _merge(config, rec.config)
    return config


def read_summary(path: str | Path) -> dict[str, Any]:
    """The run summary after every update and removal in the file."""
    summary: dict[str, Any] = {}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            _merge(summary, rec.run.summary)
        elif kind == "summary":
            _merge(summary, rec.summary)
    return summary


def read_run(path: str | Path) -> dict[str, Any]:
    """Who the run is: id, project, group, job type, tags, and its exit code if it closed."""
    info: dict[str, Any] = {}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
            info.update(
                run_id=run.run_id,
                project=run.project,
                group=run.run_group,
                job_type=run.job_type,
                tags=list(run.tags),
                resumed=run.resumed,
            )
        elif kind == "exit":
            info["exit_code"] = rec.exit.exit_code
    return info


_RUN_DIR_TIME = re.compile(r"run-(\d{8}_\d{6})-")


def find_wandb_files(run_dir: str | Path) -> list[Path]:
    """Every `.wandb` file of a lab run directory, oldest first.

    A resumed run continues the same W&B run id, but W&B starts a new local folder
    (`offline-run-<time>-<id>[-N]`) and file for each session; read them in order.
    """

    def start(path: Path) -> tuple[str, str]:
        match = _RUN_DIR_TIME.search(path.parent.name)
        return (match.group(1) if match else "", path.parent.name)

    return sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"), key=start)


def find_wandb_file(run_dir: str | Path) -> Path:
    """The newest `.wandb` file of a lab run directory."""
    files = find_wandb_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no .wandb file under {Path(run_dir) / 'wandb'}")
    return files[-1]


def main(argv: list[str] | None = None) -> None:
    """`python -m lab.wandb_records FILE_OR_RUN_DIR`: print run info, config, history
    rows and summary as JSON lines, to inspect an offline run before `wandb sync`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m lab.wandb_records FILE.wandb | RUN_DIR")
    target = Path(args[0])
    files = find_wandb_files(target) if target.is_dir() else [target]
    for path in files:
        print(json.dumps({"file": str(path), "run": read_run(path)}))
        print(json.dumps({"config": read_config(path)}, default=str))
        for row in read_history(path):
            print(json.dumps(row, default=str))
        print(json.dumps({"summary": read_summary(path)}, default=str))


if __name__ == "__main__":
    main()
