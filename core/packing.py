"""Compact storage of one excerpt's activations (the `activations` column of neuron_excerpts).

A cache of the default model holds 3.2 million (neuron, excerpt) rows of 64 activations each; as float32 lists
they were 740 MB of a 780 MB file (DuckDB barely compresses them). Each row is now one BLOB:

    byte 0      format: 1 = 12-bit affine, 0 = raw float32 (only for rows with a non-finite value)
    bytes 1-8   lo, hi: the row's minimum and maximum, float32 little-endian
    bytes 9-    one 12-bit code per activation, two codes in three bytes: x = lo + code * (hi - lo) / 4095

What is lost: every activation is within (hi - lo) / 8190 of its float32 value, i.e. 1/8190 of that excerpt's own
range; the row's minimum and maximum come back exactly. For SmolLM2-135M that is at most 0.0003 for an excerpt
whose activations span 2.5, so what a page shows (normalized 0-10 values to one decimal, heatmap colours, maxima to
three significant digits, scores to two decimals) does not change; the raw value in a token's tooltip (three
decimals) can differ in its last decimal on excerpts whose range is above 8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

FORMAT_FLOAT32 = 0
FORMAT_AFFINE12 = 1
LEVELS = 4095  # 12 bits
HEADER = 9
DESCRIPTION = "12-bit affine per excerpt (error at most 1/8190 of the excerpt's range; min and max exact)"
"""What the cache's meta says about its stored activations."""
DESCRIPTION_EXACT = "float32 per activation (imported values kept exactly)"
"""What the meta of a recording stored with `exact` says (an import: published values are evidence of published
scores and go back out in exports, so they are not rounded)."""


def packed_width(length: int) -> int:
    """Bytes of one packed row of `length` activations (header included)."""
    return HEADER + (3 * length + 1) // 2


def encode_rows(acts: np.ndarray) -> pa.BinaryArray:
    """Pack activations [rows, length] (float32) into one BLOB per row, as an Arrow binary column."""
    acts = np.ascontiguousarray(acts, dtype=np.float32)
    rows, length = acts.shape
    finite = np.isfinite(acts).all(1) if length else np.ones(rows, dtype=bool)
    safe = acts if finite.all() else np.where(np.isfinite(acts), acts, 0).astype(np.float32)
    lo = safe.min(1) if length else np.zeros(rows, dtype=np.float32)
    hi = safe.max(1) if length else np.zeros(rows, dtype=np.float32)
    span = hi - lo
    scale = np.where(span > 0, np.float32(LEVELS) / np.where(span > 0, span, 1), 0).astype(np.float32)
    codes = np.rint((safe - lo[:, None]) * scale[:, None])
    codes = np.clip(codes, 0, LEVELS, out=codes).astype(np.uint16)
    if length % 2:
        codes = np.concatenate([codes, np.zeros((rows, 1), dtype=np.uint16)], 1)
    a, b = codes[:, 0::2], codes[:, 1::2]
    body = np.empty((rows, a.shape[1], 3), dtype=np.uint8)
    body[..., 0] = a & 0xFF
    body[..., 1] = (a >> 8) | ((b & 0x0F) << 4)
    body[..., 2] = b >> 4
    body = body.reshape(rows, -1)[:, : (3 * length + 1) // 2]
    width = packed_width(length)
    out = np.empty((rows, width), dtype=np.uint8)
    out[:, 0] = FORMAT_AFFINE12
    out[:, 1:5] = lo.view(np.uint8).reshape(rows, 4)
    out[:, 5:9] = hi.view(np.uint8).reshape(rows, 4)
    out[:, HEADER:] = body
    blobs = [out[i].tobytes() for i in range(rows)] if not finite.all() else None
    if blobs is not None:  # rare: rows with inf or nan keep their raw float32 values
        for i in np.nonzero(~finite)[0]:
            blobs[i] = bytes([FORMAT_FLOAT32]) + acts[i].astype("<f4").tobytes()
        return pa.array(blobs, type=pa.binary())
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(out.tobytes())])


def encode_lists(rows: pa.Array | pa.ChunkedArray, *, exact: bool = False) -> pa.BinaryArray:
    """Pack an Arrow column of activation lists (rows may differ in length: imported records) into one BLOB per
    row, in the same order; `exact` keeps every value as float32 (format 0) instead of 12 bits."""
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    if len(rows) == 0:
        return pa.array([], type=pa.binary())
    lengths = rows.value_lengths().to_numpy(zero_copy_only=False)
    values = rows.flatten().to_numpy(zero_copy_only=False).astype("<f4")
    if exact:
        ends = np.cumsum(lengths)
        return pa.array([bytes([FORMAT_FLOAT32]) + values[end - length : end].tobytes()
                         for end, length in zip(ends, lengths, strict=True)], type=pa.binary())
    if (lengths == lengths[0]).all():
        return encode_rows(values.reshape(len(rows), int(lengths[0])))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    blobs: list[bytes] = [b""] * len(rows)
    for length in np.unique(lengths):
        chosen = np.nonzero(lengths == length)[0]
        block = values[starts[chosen, None] + np.arange(length)] if length else np.zeros((len(chosen), 0), np.float32)
        for index, blob in zip(chosen, encode_rows(block).to_pylist(), strict=True):
            blobs[index] = blob
    return pa.array(blobs, type=pa.binary())


def decode(blob: bytes | Sequence[float]) -> np.ndarray:
    """One row's activations as float32; a list (a cache written before packing) passes through."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        return np.asarray(blob, dtype=np.float32)
    data = np.frombuffer(blob, dtype=np.uint8)
    if data[0] == FORMAT_FLOAT32:
        return data[1:].view("<f4").astype(np.float32)
    if data[0] != FORMAT_AFFINE12:
        raise ValueError(f"unknown activation format {int(data[0])}")
    lo, hi = data[1:HEADER].view("<f4").astype(np.float64)
    body = data[HEADER:]
    length = (len(body) * 8) // 12
    if length % 2:
        body = np.concatenate([body, np.zeros(1, dtype=np.uint8)])
    triples = body.reshape(-1, 3).astype(np.uint16)
    codes = np.empty(triples.shape[0] * 2, dtype=np.uint16)
    codes[0::2] = triples[:, 0] | ((triples[:, 1] & 0x0F) << 8)
    codes[1::2] = (triples[:, 1] >> 4) | (triples[:, 2] << 4)
    return (lo + codes[:length] * ((hi - lo) / LEVELS)).astype(np.float32)


def decode_tuple(blob: bytes | Sequence[float]) -> tuple[float, ...]:
    """`decode` as a tuple of Python floats (what NeuronExcerpt.activations holds)."""
    return tuple(decode(blob).tolist())


def decode_lists(blobs: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """An Arrow column of packed rows (or of float lists, which pass through) as float32 lists."""
    if isinstance(blobs, pa.ChunkedArray):
        blobs = blobs.combine_chunks()
    if pa.types.is_list(blobs.type) or pa.types.is_large_list(blobs.type):
        return blobs.cast(pa.list_(pa.float32()))
    return pa.array([decode(blob) for blob in blobs.to_pylist()], type=pa.list_(pa.float32()))


def max_error(acts: np.ndarray) -> np.ndarray:
    """The largest error `encode_rows` allows for each row of acts [rows, length]: (max - min) / 8190."""
    acts = np.asarray(acts, dtype=np.float64)
    return (acts.max(1) - acts.min(1)) / (2 * LEVELS)
