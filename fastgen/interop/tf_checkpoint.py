"""Read TensorFlow V2 checkpoints without TensorFlow (or protobuf): only the standard library, numpy and torch.

A V2 checkpoint ("tensor bundle", what ``tf.train.Saver`` writes since TF 0.12 and ``tf.train.Checkpoint`` writes
today) is a prefix such as ``model.ckpt`` naming two kinds of file:

* ``PREFIX.index``: a LevelDB-format SSTable (TensorFlow keeps its own copy of LevelDB's table code). It ends in a
  48-byte footer (two block handles, padding, magic number ``0xdb4775248b80fb57``); the footer's index block lists
  the data blocks, and the data blocks hold sorted, prefix-compressed key/value entries. The entry under the empty
  key is a ``BundleHeaderProto`` (number of shards, endianness, format version). Every other entry maps a tensor
  name (e.g. ``model/conv2d_0/V``) to a ``BundleEntryProto``: dtype, shape, shard number, and the byte range
  ``[offset, offset + size)`` of the tensor's raw little-endian values in that shard.
* ``PREFIX.data-SSSSS-of-NNNNN``: the shards, which are nothing but the concatenated raw tensor bytes.

The protobuf messages are decoded by a small wire-format reader here, so neither TensorFlow nor protobuf is needed.

Not supported (each raises :class:`TFCheckpointError` with the file or tensor named): Snappy-compressed index
blocks (TensorFlow's ``BundleWriter`` never writes them), bundles written on big-endian machines, partitioned
variables (entries made of slices), and V1 checkpoints (a single ``model.ckpt`` file without ``.index``).
Tensors of dtypes with no torch equivalent (strings, resources, variants, quantized types) are skipped and can be
listed through the ``skipped`` argument of :func:`read_tf_checkpoint`. Checksums (the blocks' and the tensors'
crc32c) are not verified: the structural checks below catch truncated or garbled files, and a crc32c
implementation in pure Python would cost seconds on a 200 MB checkpoint.
"""
from __future__ import annotations

import math
import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO, Callable

import numpy as np
import torch

__all__ = ["TFCheckpointError", "tf_checkpoint_prefix", "read_tf_checkpoint"]


class TFCheckpointError(ValueError):
    """A TensorFlow checkpoint could not be read; the message names the file (and tensor) and what was expected."""


class _Malformed(Exception):
    """Raised by the byte-level parsers; turned into a TFCheckpointError naming the file by their caller."""

    lead = "corrupt TensorFlow V2 checkpoint index: "


class _NotAnIndex(_Malformed):
    """The file is not an SSTable at all (its message says so)."""

    lead = ""


class _Unsupported(_Malformed):
    """A well-formed index using a feature this reader leaves out."""

    lead = "unsupported checkpoint index: "


# SSTable constants (LevelDB's table format, as in tensorflow/core/lib/io/format.h).
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two BlockHandles padded to 2 * 20 bytes, then the 8-byte magic number
_BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c
_NO_COMPRESSION = 0
_SNAPPY_COMPRESSION = 1

# The bundle format version this reader understands (TF's kTensorBundleVersion); a bundle whose min_consumer is
# above it was written by a TensorFlow that expects readers to know something newer.
_BUNDLE_VERSION = 1

_DATA_SHARD_RE = re.compile(r"\.data-\d{5}-of-\d{5}$")


@dataclass(frozen=True)
class _DType:
    name: str
    numpy: str  # little-endian numpy dtype of the stored bytes
    torch: torch.dtype


# TensorFlow DataType enum (tensorflow/core/framework/types.proto) -> how its raw bytes are read. Only dtypes that
# TF stores as plain memcpy'd values and torch can hold; bfloat16 is read as int16 and its bits reinterpreted, since
# numpy has no bfloat16.
_DTYPES: dict[int, _DType] = {
    1: _DType("DT_FLOAT", "<f4", torch.float32),
    2: _DType("DT_DOUBLE", "<f8", torch.float64),
    3: _DType("DT_INT32", "<i4", torch.int32),
    4: _DType("DT_UINT8", "u1", torch.uint8),
    5: _DType("DT_INT16", "<i2", torch.int16),
    6: _DType("DT_INT8", "i1", torch.int8),
    8: _DType("DT_COMPLEX64", "<c8", torch.complex64),
    9: _DType("DT_INT64", "<i8", torch.int64),
    10: _DType("DT_BOOL", "?", torch.bool),
    14: _DType("DT_BFLOAT16", "<i2", torch.bfloat16),
    18: _DType("DT_COMPLEX128", "<c16", torch.complex128),
    19: _DType("DT_HALF", "<f2", torch.float16),
}
_DT_INVALID = 0


# ----------------------------------------------------------------------------------------------------------------
# Paths


def tf_checkpoint_prefix(path: str | os.PathLike) -> str:
    """Accepts the prefix itself ("model.ckpt"), or the path of its .index or of a data shard file; returns the
    prefix. Raises TFCheckpointError if PREFIX.index does not exist."""
    text = os.fsdecode(os.fspath(path))
    if text.endswith(".index"):
        prefix = text[: -len(".index")]
    else:
        prefix = _DATA_SHARD_RE.sub("", text)
    index_path = prefix + ".index"
    if os.path.isfile(index_path):
        return prefix
    hint = ""
    if os.path.isdir(text):
        hint = " (this is a directory: pass the checkpoint prefix inside it, e.g. DIR/model.ckpt)"
    elif os.path.isfile(text) and prefix == text:
        hint = " (a single-file checkpoint without .index is the TF V1 format, which is not supported)"
    raise TFCheckpointError(f"{index_path}: TensorFlow checkpoint index not found{hint}")


# ----------------------------------------------------------------------------------------------------------------
# Byte-level decoding shared by the SSTable and protobuf readers


def _varint(buf: bytes, pos: int, limit: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decodes a base-128 varint at ``buf[pos:limit]``; returns (value, position after it)."""
    result = 0
    for i in range(max_bytes):
        if pos >= limit:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return result, pos
    raise _Malformed("varint too long")


def _fixed32(buf: bytes, pos: int, limit: int) -> int:
    if pos + 4 > limit:
        raise _Malformed("truncated fixed32")
    return struct.unpack_from("<I", buf, pos)[0]


# ----------------------------------------------------------------------------------------------------------------
# SSTable (the .index file)


def _block_handle(buf: bytes, pos: int, limit: int) -> tuple[tuple[int, int], int]:
    """Decodes a BlockHandle (varint64 offset, varint64 size); returns ((offset, size), position after it)."""
    offset, pos = _varint(buf, pos, limit)
    size, pos = _varint(buf, pos, limit)
    return (offset, size), pos


def _read_footer(data: bytes) -> tuple[int, int]:
    """Returns the index block's handle; raises _Malformed unless the file ends in an SSTable footer."""
    if len(data) < _FOOTER_SIZE:
        raise _NotAnIndex(f"file is {len(data)} bytes, too short to be a TensorFlow V2 checkpoint index")
    footer = len(data) - _FOOTER_SIZE
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != _TABLE_MAGIC:
        raise _NotAnIndex(f"not a TensorFlow V2 checkpoint index (bad SSTable magic number {magic:#018x})")
    # The metaindex block is empty in tensor bundles (no filters or stats); only the index block matters.
    _metaindex, pos = _block_handle(data, footer, len(data) - 8)
    index_handle, _ = _block_handle(data, pos, len(data) - 8)
    return index_handle


def _read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    """The contents of the block at ``handle``, checked for its compression type (crc32c is not verified)."""
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER_SIZE > len(data):
        raise _Malformed(f"block at offset {offset} of {size} bytes runs past the end of the file ({len(data)} bytes)")
    kind = data[end]
    if kind == _SNAPPY_COMPRESSION:
        # TF's BundleWriter always writes the index uncompressed; decoding Snappy here would be dead weight.
        raise _Unsupported("Snappy-compressed index blocks are not supported")
    if kind != _NO_COMPRESSION:
        raise _Malformed(f"block at offset {offset} has unknown compression type {kind}")
    return data[offset:end]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one block, in order, with their prefix-compressed keys rebuilt."""
    if len(block) < 4:
        raise _Malformed(f"block of {len(block)} bytes has no restart count")
    num_restarts = _fixed32(block, len(block) - 4, len(block))
    if 4 * (num_restarts + 1) > len(block):
        raise _Malformed(f"block of {len(block)} bytes cannot hold its {num_restarts} restart points")
    # Entries are read sequentially, so the restart array (only used for seeking) is skipped.
    limit = len(block) - 4 * (num_restarts + 1)
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos, limit, max_bytes=5)
        non_shared, pos = _varint(block, pos, limit, max_bytes=5)
        value_length, pos = _varint(block, pos, limit, max_bytes=5)
        if shared > len(key) or pos + non_shared + value_length > limit:
            raise _Malformed("bad entry in block")
        key = key[:shared] + block[pos: pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos: pos + value_length]))
        pos += value_length
    return entries


def _table_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) entry of the SSTable ``data``, in key order."""
    index_handle = _read_footer(data)
    index_block = _read_block(data, index_handle)
    entries: list[tuple[bytes, bytes]] = []
    # The index block maps a separator key to the handle of each data block, in order; the keys are not needed
    # to walk the whole table. A handle may be followed by extra bytes (LevelDB reserves them), which are ignored.
    # Data blocks lie one after the other before the index block: handles that go back or overlap could make a
    # small file decode the same bytes over and over, so they are refused and the work stays within the file size.
    next_free = 0
    for _separator, encoded_handle in _block_entries(index_block):
        handle, _ = _block_handle(encoded_handle, 0, len(encoded_handle))
        offset, size = handle
        if offset < next_free or offset + size + _BLOCK_TRAILER_SIZE > index_handle[0]:
            raise _Malformed(f"data block at offset {offset} overlaps another block")
        next_free = offset + size + _BLOCK_TRAILER_SIZE
        entries.extend(_block_entries(_read_block(data, handle)))
    return entries


# ----------------------------------------------------------------------------------------------------------------
# Protobuf wire format


def _proto_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decodes a protobuf message into field number -> values in order (ints, or bytes for length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos, limit = 0, len(buf)
    while pos < limit:
        tag, pos = _varint(buf, pos, limit)
        number, wire_type = tag >> 3, tag & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _varint(buf, pos, limit)
        elif wire_type == 1:
            if pos + 8 > limit:
                raise _Malformed("truncated fixed64 field")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire_type == 2:
            length, pos = _varint(buf, pos, limit)
            if pos + length > limit:
                raise _Malformed("truncated length-delimited field")
            value = buf[pos: pos + length]
            pos += length
        elif wire_type == 5:
            value = _fixed32(buf, pos, limit)
            pos += 4
        else:
            # 3/4 are the deprecated groups, which no TF message uses; 6/7 do not exist.
            raise _Malformed(f"unsupported protobuf wire type {wire_type}")
        if number == 0:
            raise _Malformed("protobuf field number 0")
        fields.setdefault(number, []).append(value)
    return fields


def _int_field(fields: dict[int, list[int | bytes]], number: int, bits: int = 64) -> int:
    """A scalar varint field as a signed integer (proto3 default 0); the last occurrence wins, as in protobuf."""
    values = fields.get(number)
    if not values:
        return 0
    value = values[-1]
    if not isinstance(value, int):
        raise _Malformed(f"field {number} should be an integer")
    # int32/int64 negatives are sent as 10-byte two's complement; truncate to the field's width, then sign it.
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _message_fields(fields: dict[int, list[int | bytes]], number: int) -> list[dict[int, list[int | bytes]]]:
    """The decoded sub-messages of a (repeated) message field."""
    out = []
    for value in fields.get(number, []):
        if not isinstance(value, bytes):
            raise _Malformed(f"field {number} should be a message")
        out.append(_proto_fields(value))
    return out


def _int_list(fields: dict[int, list[int | bytes]], number: int, bits: int) -> list[int]:
    """A repeated integer field, accepting both packed (bytes) and unpacked (varint) encodings."""
    out: list[int] = []
    for value in fields.get(number, []):
        if isinstance(value, bytes):
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos, len(value))
                out.append(_int_field({1: [item]}, 1, bits))
        else:
            out.append(_int_field({1: [value]}, 1, bits))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Tensor bundle messages


@dataclass
class _Header:
    num_shards: int
    endianness: int  # 0 LITTLE, 1 BIG
    min_consumer: int
    bad_consumers: list[int]


@dataclass
class _Entry:
    dtype: int
    shape: tuple[int, ...] | None  # None: unknown rank
    shard_id: int
    offset: int
    size: int
    num_slices: int


def _parse_header(value: bytes) -> _Header:
    """BundleHeaderProto: num_shards=1, endianness=2, version=3 (VersionDef: producer=1, min_consumer=2,
    bad_consumers=3)."""
    fields = _proto_fields(value)
    versions = _message_fields(fields, 3)
    version = versions[-1] if versions else {}
    return _Header(
        num_shards=_int_field(fields, 1, 32),
        endianness=_int_field(fields, 2, 32),
        min_consumer=_int_field(version, 2, 32),
        bad_consumers=_int_list(version, 3, 32),
    )


def _parse_shape(fields: dict[int, list[int | bytes]]) -> tuple[int, ...] | None:
    """TensorShapeProto: dim=2 (Dim: size=1, name=2), unknown_rank=3."""
    if _int_field(fields, 3):
        return None
    return tuple(_int_field(dim, 1) for dim in _message_fields(fields, 2))


def _parse_entry(value: bytes) -> _Entry:
    """BundleEntryProto: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6 (unused), slices=7."""
    fields = _proto_fields(value)
    shapes = _message_fields(fields, 2)
    return _Entry(
        dtype=_int_field(fields, 1, 32),
        shape=_parse_shape(shapes[-1]) if shapes else (),
        shard_id=_int_field(fields, 3, 32),
        offset=_int_field(fields, 4),
        size=_int_field(fields, 5),
        num_slices=len(fields.get(7, [])),
    )


def _parse_index(data: bytes) -> tuple[_Header, list[tuple[bytes, _Entry]]]:
    """The header and the tensor entries (raw key, entry) of an index file's bytes."""
    entries = _table_entries(data)
    # BundleWriter puts the header under the empty key, which sorts first.
    if not entries or entries[0][0] != b"":
        raise _Malformed("no bundle header entry (empty key) in the index")
    header = _parse_header(entries[0][1])
    return header, [(key, _parse_entry(value)) for key, value in entries[1:]]


def _check_header(header: _Header, index_path: str) -> None:
    if header.endianness == 1:
        raise TFCheckpointError(f"{index_path}: the checkpoint was written on a big-endian machine; only "
                                "little-endian checkpoints are supported")
    if header.endianness != 0:
        raise TFCheckpointError(f"{index_path}: unknown endianness {header.endianness} in the bundle header")
    if header.num_shards < 1:
        raise TFCheckpointError(f"{index_path}: bundle header says {header.num_shards} data shards; expected >= 1")
    if header.min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in header.bad_consumers:
        raise TFCheckpointError(f"{index_path}: checkpoint format requires a reader of version >= "
                                f"{header.min_consumer} (this reader is version {_BUNDLE_VERSION})")


# ----------------------------------------------------------------------------------------------------------------
# Tensor data


def _reject_partitioned(entries: list[tuple[bytes, _Entry]], index_path: str) -> None:
    """Raises for the first partitioned variable. Checked before any name is decoded: the entries of its slices
    have binary (OrderedCode) keys that sort before every ordinary name and need not be UTF-8."""
    for key, entry in entries:
        if entry.num_slices:
            name = key.decode("utf-8", errors="backslashreplace")
            raise TFCheckpointError(f"{index_path}: tensor {name!r} is a partitioned variable ({entry.num_slices} "
                                    "slices); partitioned variables are not supported")


def _tensor_name(key: bytes, index_path: str) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TFCheckpointError(f"{index_path}: tensor name {key!r} is not valid UTF-8") from None


def _check_entry(name: str, entry: _Entry, dtype: _DType, header: _Header, index_path: str) -> tuple[int, ...]:
    """Validates the metadata of one tensor entry; returns its shape."""
    where = f"{index_path}: tensor {name!r}"
    if entry.shape is None or any(d < 0 for d in entry.shape) or len(entry.shape) > 64:
        raise TFCheckpointError(f"{where} has an unknown or invalid shape {entry.shape}")
    if not 0 <= entry.shard_id < header.num_shards:
        raise TFCheckpointError(f"{where} is in shard {entry.shard_id}, but the bundle has {header.num_shards}")
    expected = math.prod(entry.shape) * np.dtype(dtype.numpy).itemsize
    if entry.size != expected:
        raise TFCheckpointError(f"{where}: stored size {entry.size} bytes, expected {expected} for "
                                f"{dtype.name} of shape {list(entry.shape)}")
    if entry.offset < 0:
        raise TFCheckpointError(f"{where} has negative offset {entry.offset}")
    return entry.shape


def _read_tensor(file: BinaryIO, path: str, name: str, entry: _Entry, shape: tuple[int, ...],
                 dtype: _DType, file_size: int) -> torch.Tensor:
    """Reads one tensor's bytes straight into a fresh array (one copy, no intermediate bytes object)."""
    if entry.offset + entry.size > file_size:
        raise TFCheckpointError(f"{path}: tensor {name!r} needs bytes [{entry.offset}, {entry.offset + entry.size}) "
                                f"but the file has only {file_size} bytes")
    raw = np.empty(entry.size, dtype=np.uint8)
    file.seek(entry.offset)
    got = file.readinto(raw) if entry.size else 0
    if got != entry.size:
        raise TFCheckpointError(f"{path}: short read of tensor {name!r} ({got} of {entry.size} bytes)")
    try:
        array = raw.view(np.dtype(dtype.numpy)).reshape(shape)
    except ValueError as e:  # e.g. an empty tensor whose dimensions overflow numpy's size type
        raise TFCheckpointError(f"{path}: tensor {name!r} of shape {list(shape)}: {e}") from None
    if sys.byteorder != "little" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder("="))  # torch.from_numpy needs native byte order
    tensor = torch.from_numpy(array)
    if dtype.torch is torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)  # same 16 bits, reinterpreted
    return tensor


def _shard_path(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


def read_tf_checkpoint(path: str | os.PathLike, skipped: list[str] | None = None,
                       select: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """All tensors of the bundle, by variable name (e.g. "model/conv2d_0/V"), as CPU tensors in TF's own layout
    and dtype.

    ``path`` is the checkpoint prefix or the path of its ``.index`` or a data shard (see
    :func:`tf_checkpoint_prefix`). Tensors whose dtype torch cannot hold (DT_STRING, DT_RESOURCE, DT_VARIANT,
    quantized and unsigned >8-bit types) are left out of the result; pass a list as ``skipped`` to receive their
    names (appended in index order). With ``select``, only the tensors whose name it accepts are read (the
    others' entries are still checked). Raises :class:`TFCheckpointError` for anything missing, unsupported or
    malformed.
    """
    prefix = tf_checkpoint_prefix(path)
    index_path = prefix + ".index"
    try:
        with open(index_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TFCheckpointError(f"{index_path}: cannot read checkpoint index: {e}") from e
    try:
        header, entries = _parse_index(data)
    except _Malformed as e:
        raise TFCheckpointError(f"{index_path}: {e.lead}{e}") from e
    except (IndexError, struct.error, ValueError, OverflowError) as e:
        # The parsers check bounds themselves; should one still trip, it is a damaged file, not a reader crash.
        raise TFCheckpointError(f"{index_path}: {_Malformed.lead}{e!r}") from e
    _check_header(header, index_path)

    # Validate every entry before touching a data file, so a bad entry is reported even if a shard is missing.
    _reject_partitioned(entries, index_path)
    plan: list[tuple[str, _Entry, tuple[int, ...], _DType]] = []
    for key, entry in entries:
        name = _tensor_name(key, index_path)
        if entry.dtype == _DT_INVALID:
            raise TFCheckpointError(f"{index_path}: tensor {name!r} has no dtype")
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None:
            if skipped is not None:
                skipped.append(name)
            continue
        shape = _check_entry(name, entry, dtype, header, index_path)
        if select is None or select(name):
            plan.append((name, entry, shape, dtype))

    tensors: dict[str, torch.Tensor] = {}
    for shard_id in sorted({entry.shard_id for _, entry, _, _ in plan}):
        shard_path = _shard_path(prefix, shard_id, header.num_shards)
        try:
            # Each shard is opened once and read tensor by tensor, never whole (checkpoints are 100s of MB).
            with open(shard_path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                for name, entry, shape, dtype in plan:
                    if entry.shard_id == shard_id:
                        tensors[name] = _read_tensor(f, shard_path, name, entry, shape, dtype, size)
        except OSError as e:
            raise TFCheckpointError(f"{shard_path}: cannot read checkpoint data shard: {e}") from e
    # Return in index (name) order regardless of which shard each tensor came from.
    return {name: tensors[name] for name, _, _, _ in plan}
