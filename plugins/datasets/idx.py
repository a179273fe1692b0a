"""The IDX file format (MNIST's): a tiny header, then a dense big-endian array.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data. Files may be gzip-compressed (the canonical `*-ubyte.gz`).
A truncated or corrupt file raises `LabError` naming the file, never a numpy error.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lab.api import LabError

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it is gzip (by magic number, not by name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror or exc}; check the path and permissions") from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise LabError(f"{path} is a damaged gzip file ({exc}); delete it so it is downloaded again") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a numpy array in native byte order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise LabError(f"{source} is not an IDX file (bad magic number); delete it so it is downloaded again")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise LabError(f"{source}: unknown IDX type code 0x{code:02x}; the file is corrupt")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LabError(f"{source} is truncated (header cut short); delete it so it is downloaded again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise LabError(
            f"{source} holds {len(data) - header} data bytes but its header {tuple(shape)} needs {expected}; "
            "the file is truncated or corrupt: delete it so it is downloaded again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) as a torch tensor."""
    return torch.from_numpy(parse_idx(read_bytes(path), str(path)))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX encoding of `array` (used to write small fixtures and caches)."""
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_DTYPES.items()}
    native = np.asarray(array)
    key = native.dtype.newbyteorder("=").str
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {native.dtype}")
    code = codes[key]
    header = bytes([0, 0, code, native.ndim]) + struct.pack(f">{native.ndim}I", *native.shape)
    return header + native.astype(IDX_DTYPES[code], copy=False).tobytes()
