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

Used by the tests to check that the W&B history matches metrics.jsonl, by users who want
to inspect an offline run before `wandb sync`, and by the W&B tracker when a run resumes
(`drop_history_after` rewrites a file in the same format, byte for byte as wandb-core
writes it).

Why it exists: wandb 0.31.0 (checked) ships no Python reader or writer for these files
(`wandb.sdk.internal.datastore` is gone; the format lives in the Go wandb-core binary). Its
one reader, `wandb leet inspect [--json] FILE`, prints the records, handy for browsing, but
cannot rewrite a file as `drop_history_after` must.

What a sync makes of a resumed run (`synced_history`): every session of a run writes its
own folder and file with the same run id; `wandb sync` replays the files of one run in
the order their sessions started, into one W&B run, and W&B keeps a history row only if
its `_step` is above every `_step` the run already holds (a row at a lower or equal step
is dropped).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.atomic import atomic_write

if TYPE_CHECKING:
    from wandb.proto.wandb_internal_pb2 import Record

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT, FILE_MAGIC, FILE_VERSION = b":W&B", 0xBEE1, 0
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_LEN = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """The file is not a `.wandb` log or is corrupt where it is not merely truncated."""


def _record_start(data: bytes) -> int:
    """The first chunk that begins a record (FULL or FIRST) in `data` read from a block
    boundary: the chunks before it end a record begun in an earlier block."""
    pos = 0
    while pos + CHUNK_HEADER.size <= len(data):
        block_left = BLOCK_LEN - pos % BLOCK_LEN
        if block_left < CHUNK_HEADER.size:
            pos += block_left
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind in (FULL, FIRST) or (kind == 0 and length == 0):
            break
        pos += CHUNK_HEADER.size + length
    return pos


def _read_chunks(data: bytes, pos: int) -> Iterator[tuple[int, int, bytes]]:
    """(byte, type, data) of every chunk from byte `pos` on, its checksum checked; block
    padding is skipped and a truncated final chunk ends the stream quietly."""
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
        end = pos + CHUNK_HEADER.size + length
        if end > len(data):
            return
        body = data[pos + CHUNK_HEADER.size : end]
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise WandbFileError(f"checksum mismatch in chunk at byte {pos}")
        yield pos, kind, body
        pos = end


def _payloads(data: bytes, start: int = FILE_HEADER.size) -> Iterator[bytes]:
    """Reassemble record payloads from the chunks of a LevelDB log (after the file header).

    A truncated final chunk (a run killed mid-write) ends the stream quietly; a checksum
    mismatch or an impossible chunk sequence raises, so silent corruption never passes.
    `data` may also be the file from a block boundary on (`start` 0): the chunks that end
    a record begun in an earlier block are skipped.
    """
    pending: list[bytes] | None = None
    for pos, kind, body in _read_chunks(data, _record_start(data) if start == 0 else start):
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
            raise WandbFileError(f"unexpected chunk type {kind} in the chunk at byte {pos}")


def _chunks(payloads: Iterable[bytes]) -> bytes:
    """The inverse of `_payloads`: a whole `.wandb` file (header included) holding `payloads`."""
    out = bytearray(FILE_HEADER.pack(FILE_IDENT, FILE_MAGIC, FILE_VERSION))
    for payload in payloads:
        rest, first = memoryview(payload), True
        while True:
            block_left = BLOCK_LEN - len(out) % BLOCK_LEN
            if block_left < CHUNK_HEADER.size:  # too small for a chunk header: pad the block
                out += bytes(block_left)
                continue
            room = block_left - CHUNK_HEADER.size
            piece, rest = rest[:room], rest[room:]
            last = len(rest) == 0
            kind = FULL if first and last else FIRST if first else LAST if last else MIDDLE
            crc = zlib.crc32(piece, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF
            out += CHUNK_HEADER.pack(crc, len(piece), kind)
            out += piece
            first = False
            if last:
                break
    return bytes(out)


def write_records(path: str | Path, records: Iterable[Record | bytes]) -> None:
    """Write `records` (protobuf records, or serialized ones as `read_payloads` gives them)
    as a `.wandb` file, atomically (temp file + rename): the file holds either its old or
    its new records, never a mix."""
    data = _chunks(r if isinstance(r, bytes) else r.SerializeToString() for r in records)
    atomic_write(Path(path), lambda handle: handle.write(data))


def read_payloads(path: str | Path, limit: int | None = None) -> Iterator[bytes]:
    """Yield every serialized record in a `.wandb` file, in write order, as wandb-core
    wrote it (protobuf serialization is not canonical: re-serializing a parsed record may
    order its fields differently). `limit`: read only the file's first `limit` bytes."""
    with open(path, "rb") as handle:
        data = handle.read() if limit is None else handle.read(limit)
    if len(data) < FILE_HEADER.size:
        if FILE_HEADER.pack(FILE_IDENT, FILE_MAGIC, FILE_VERSION).startswith(data):
            return  # killed before its first record was written: an empty log
        raise WandbFileError(f"{path}: too short for a .wandb file")
    ident, magic, version = FILE_HEADER.unpack_from(data)
    if (ident, magic, version) != (FILE_IDENT, FILE_MAGIC, FILE_VERSION):
        raise WandbFileError(f"{path}: not a .wandb file (header {data[:7]!r})")
    yield from _payloads(data)


def read_records(path: str | Path, limit: int | None = None) -> Iterator[Record]:
    """Yield every protobuf `Record` in a `.wandb` file, in write order (`limit`: only
    those in the file's first `limit` bytes)."""
    from wandb.proto.wandb_internal_pb2 import Record

    for payload in read_payloads(path, limit):
        record = Record()
        record.ParseFromString(payload)
        yield record


def has_exit_record(path: str | Path) -> bool:
    """Whether the file ends its session (wandb-core writes the exit record last), reading
    only its last blocks: cheap enough to poll while wandb-core finishes a file."""
    from wandb.proto.wandb_internal_pb2 import Record

    path = Path(path)
    size = path.stat().st_size
    start = max(0, size - 2 * BLOCK_LEN) // BLOCK_LEN * BLOCK_LEN
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    if start == 0:
        if len(data) < FILE_HEADER.size:
            return False
        payloads = _payloads(data)
    else:
        payloads = _payloads(data, start=0)
    record = Record()
    for payload in payloads:
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


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


def _merged(path: str | Path, part: str) -> dict[str, Any]:
    """`part` ("config" or "summary") as the file leaves it: the run record's, then every
    `part` record's updates and removals, in order."""
    merged: dict[str, Any] = {}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            _merge(merged, getattr(rec.run, part))
        elif kind == part:
            _merge(merged, getattr(rec, part))
    return merged


def read_config(path: str | Path) -> dict[str, Any]:
    """The run config as the last write left it (including W&B's own `_wandb` entry)."""
    return _merged(path, "config")


def read_summary(path: str | Path) -> dict[str, Any]:
    """The run summary after every update and removal in the file."""
    return _merged(path, "summary")


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


def session_start(path: str | Path) -> float | None:
    """When the session that wrote `path` started (its run record), as `wandb sync` orders
    the files of one run; None for a file cut before its run record (a session killed
    with kill -9 before wandb-core wrote anything to disk), which no sync can read."""
    for limit in (1 << 20, None):  # the run record is the second one: look at the start first
        try:
            for rec in read_records(path, limit):
                if rec.WhichOneof("record_type") == "run":
                    return rec.run.start_time.ToMicroseconds() / 1e6
        except WandbFileError:
            return None
        if limit is not None and Path(path).stat().st_size <= limit:
            break
    return None


def find_wandb_files(run_dir: str | Path) -> list[Path]:
    """Every `.wandb` file of a lab run directory, oldest first.

    A resumed run continues the same W&B run id, but W&B starts a new local folder
    (`offline-run-<time>-<id>[-N]`) and file for each session; read them in order: the
    order in which `wandb sync` replays them, the sessions' start times (the folder name's
    second, then the run record's microseconds).
    """

    def start(path: Path) -> tuple[str, float, str]:
        match = _RUN_DIR_TIME.search(path.parent.name)
        started = session_start(path)
        return (match.group(1) if match else "", float("inf") if started is None else started, path.parent.name)

    return sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"), key=start)


def is_synced(path: str | Path) -> bool:
    """Whether `wandb sync` has uploaded this file (it leaves `run-ID.wandb.synced` beside it)."""
    return Path(path).with_suffix(".wandb.synced").exists()


def is_offline(path: str | Path) -> bool:
    """Whether the file is an offline session's (`offline-run-...`); an online session
    streamed its rows to the server as it logged them."""
    return Path(path).parent.name.startswith("offline-")


def synced_history(files: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """The history W&B holds once every file of a run is synced (`wandb sync` of all of
    them, or of each in turn, oldest first): the files' rows in session order, less every
    row whose `_step` is not above the highest `_step` already kept, which W&B drops.

    `files` is a lab run directory (all its `.wandb` files) or the files themselves.
    """
    if isinstance(files, (str, Path)) and Path(files).is_dir():
        files = find_wandb_files(files)
    elif isinstance(files, (str, Path)):
        files = [Path(files)]
    return sync_rule(read_history(path) for path in files)


def sync_rule(histories: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows W&B keeps of the histories of one run's files, replayed in order: each row
    whose `_step` is above every `_step` kept before it."""
    rows: list[dict[str, Any]] = []
    top: int | None = None
    for history in histories:
        for row in history:
            step = row.get("_step")
            if not isinstance(step, int) or (top is not None and step <= top):
                continue
            top = step
            rows.append(row)
    return rows


def _after(rec: Any, step: int, key: str) -> bool:
    """Whether `rec` is a history row whose `key` is above `step`."""
    if rec.WhichOneof("record_type") != "history":
        return False
    for item in rec.history.item:
        if (item.key or ".".join(item.nested_key)) == key:
            value = _history_value(item)
            return isinstance(value, (int, float)) and value > step
    return False


def drop_history_after(path: str | Path, step: int, key: str = "global_step") -> int:
    """Remove from the file every history row whose `key` is above `step` (rows a session
    logged after the checkpoint a later session resumed from); returns how many. Every
    other record stays byte for byte as wandb-core wrote it. Leaves the file untouched
    (not even rewritten) when nothing is above `step`.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    payloads = list(read_payloads(path))
    kept = []
    for payload in payloads:
        record = Record()
        record.ParseFromString(payload)
        if not _after(record, step, key):
            kept.append(payload)
    dropped = len(payloads) - len(kept)
    if dropped:
        write_records(path, kept)
    return dropped


def find_wandb_file(run_dir: str | Path) -> Path:
    """The newest `.wandb` file of a lab run directory."""
    files = find_wandb_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no .wandb file under {Path(run_dir) / 'wandb'}")
    return files[-1]


def main(argv: list[str] | None = None) -> None:
    """`python -m lab.plugins.wandb_tracker.records [--synced] FILE_OR_RUN_DIR`: print run info, config,
    history rows and summary as JSON lines, to inspect an offline run before `wandb sync`;
    with --synced, only the history a sync of all the files would leave."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    synced = "--synced" in args
    args = [a for a in args if a != "--synced"]
    if len(args) != 1:
        raise SystemExit("usage: python -m lab.plugins.wandb_tracker.records [--synced] FILE.wandb | RUN_DIR\n"
                         "  --synced: only the history rows W&B holds once every file is synced")
    target = Path(args[0])
    files = find_wandb_files(target) if target.is_dir() else [target]
    if synced:
        for row in synced_history(files):
            print(json.dumps(row, default=str))
        return
    for path in files:
        print(json.dumps({"file": str(path), "run": read_run(path)}))
        print(json.dumps({"config": read_config(path)}, default=str))
        for row in read_history(path):
            print(json.dumps(row, default=str))
        print(json.dumps({"summary": read_summary(path)}, default=str))


if __name__ == "__main__":
    main()
