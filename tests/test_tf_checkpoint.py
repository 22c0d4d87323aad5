"""Tests of fastgen.interop.tf_checkpoint, the TensorFlow-free reader of TF V2 checkpoints (tensor bundles).

TensorFlow is not needed: the checkpoints are made by the small writer below, which is built from the format's
published description (LevelDB's doc/table_format.md for the .index SSTable; TensorFlow's tensor_bundle.proto,
tensor_shape.proto, versions.proto and types.proto for the messages; the naming of the data shards in
tensor_bundle/naming.cc) and shares no code with the reader. Where TF's BundleWriter makes a choice, the writer
makes the same one (no compression, header under the empty key, proto3 fields left out when zero); where a real
file may differ (how many entries per block, restart interval, gaps between tensors in a shard), the writer varies
it so the reader cannot depend on it.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastgen.interop.tf_checkpoint import TFCheckpointError, read_tf_checkpoint, tf_checkpoint_prefix

# ----------------------------------------------------------------------------------------------------------------
# Writer

MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, stored as fixed64 little-endian at the end of the file

# TensorFlow DataType enum values (types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_BFLOAT16, DT_HALF = 9, 10, 14, 19

TORCH_TO_TF = {
    torch.float32: DT_FLOAT, torch.float64: DT_DOUBLE, torch.int32: DT_INT32, torch.uint8: DT_UINT8,
    torch.int16: DT_INT16, torch.int8: DT_INT8, torch.int64: DT_INT64, torch.bool: DT_BOOL,
    torch.bfloat16: DT_BFLOAT16, torch.float16: DT_HALF,
}


def varint(n: int) -> bytes:
    """Base-128 varint, least significant group first; negatives as 64-bit two's complement (protobuf int64)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_int(number: int, value: int) -> bytes:
    """A varint field (wire type 0); proto3 leaves zero values out, and so does TF's serializer."""
    return varint(number << 3) + varint(value) if value else b""


def pb_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): sub-message, string or bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def pb_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def header_proto(num_shards: int = 1, endianness: int = 0, producer: int = 1, min_consumer: int = 0) -> bytes:
    """BundleHeaderProto {num_shards=1, endianness=2, version=3: VersionDef {producer=1, min_consumer=2}}."""
    version = pb_int(1, producer) + pb_int(2, min_consumer)
    return pb_int(1, num_shards) + pb_int(2, endianness) + pb_bytes(3, version)


def shape_proto(shape: tuple[int, ...]) -> bytes:
    """TensorShapeProto {dim=2: repeated Dim {size=1, name=2}}; a scalar has no dims."""
    return b"".join(pb_bytes(2, pb_int(1, size) + pb_bytes(2, b"d")) for size in shape)


def entry_proto(dtype: int, shape: tuple[int, ...], shard_id: int, offset: int, size: int,
                num_slices: int = 0) -> bytes:
    """BundleEntryProto {dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6, slices=7}."""
    msg = pb_int(1, dtype) + pb_bytes(2, shape_proto(shape)) + pb_int(3, shard_id) + pb_int(4, offset)
    msg += pb_int(5, size) + pb_fixed32(6, 0x12345678)
    for i in range(num_slices):
        # TensorSliceProto {extent=1: repeated Extent {start=1, length=2}}, one extent per dimension.
        extents = b"".join(pb_bytes(1, pb_int(1, i) + pb_int(2, 1)) for _ in shape)
        msg += pb_bytes(7, extents)
    return msg


def build_block(items: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    """A block: entries (shared, non_shared, value_length, key delta, value), then the restart offsets and their
    count as fixed32. Keys are prefix-compressed against the previous key except at restart points."""
    out = bytearray()
    restarts: list[int] = []
    previous = b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]  # an empty block still has one restart point
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def build_table(items: list[tuple[bytes, bytes]], entries_per_block: int = 3, restart_interval: int = 2,
                data_block_type: int = 0) -> tuple[bytes, int]:
    """An SSTable of sorted ``items``: data blocks, an empty metaindex block, an index block, the footer. Every
    block is followed by a type byte and a (here meaningless) crc. Returns the file and its number of data blocks."""
    out = bytearray()

    def write_block(contents: bytes, kind: int) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        out.extend(contents + bytes([kind]) + b"\xde\xad\xbe\xef")
        return handle

    index_items = []
    for start in range(0, len(items), entries_per_block):
        chunk = items[start: start + entries_per_block]
        # Any key >= the block's last and < the next block's first separates them; the last key itself will do.
        index_items.append((chunk[-1][0], write_block(build_block(chunk, restart_interval), data_block_type)))
    metaindex = write_block(build_block([], 1), 0)
    index = write_block(build_block(index_items, 1), 0)
    footer = (metaindex + index).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    return bytes(out + footer), len(index_items)


@dataclass
class Spec:
    """One tensor entry to write; ``size``/``offset``/``dtype`` override the true values to make broken files."""

    name: str
    tensor: torch.Tensor | None = None
    dtype: int | None = None
    raw: bytes | None = None
    shape: tuple[int, ...] | None = None
    shard: int = 0
    size: int | None = None
    offset: int | None = None
    num_slices: int = 0


def raw_bytes(t: torch.Tensor) -> bytes:
    assert sys.byteorder == "little"
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_bundle(prefix: Path, specs: list[Spec], num_shards: int = 1, endianness: int = 0,
                 min_consumer: int = 0, **table_options: int) -> int:
    """Writes PREFIX.index and its shards; returns the number of data blocks in the index."""
    shards = [bytearray() for _ in range(num_shards)]
    items = [(b"", header_proto(num_shards, endianness, min_consumer=min_consumer))]
    for spec in sorted(specs, key=lambda s: s.name.encode()):
        raw = spec.raw if spec.raw is not None else raw_bytes(spec.tensor)
        dtype = spec.dtype if spec.dtype is not None else TORCH_TO_TF[spec.tensor.dtype]
        shape = spec.shape if spec.shape is not None else tuple(spec.tensor.shape)
        data = shards[spec.shard]
        data += b"\xab" * (len(items) % 3)  # gaps (as data alignment makes): offsets must be honoured
        offset = len(data)
        data += raw
        size = len(raw) if spec.size is None else spec.size
        offset = offset if spec.offset is None else spec.offset
        items.append((spec.name.encode(), entry_proto(dtype, shape, spec.shard, offset, size, spec.num_slices)))
    table, num_blocks = build_table(items, **table_options)
    Path(f"{prefix}.index").write_bytes(table)
    for shard_id, data in enumerate(shards):
        Path(f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}").write_bytes(bytes(data))
    return num_blocks


# ----------------------------------------------------------------------------------------------------------------
# Tests


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model/conv2d_0/V": torch.randn(2, 3, 5, 7, generator=g),
        "model/conv2d_0/V/ExponentialMovingAverage": torch.randn(2, 3, 5, 7, generator=g),
        "model/conv2d_0/b": torch.randn(13, generator=g),
        "model/conv2d_0/g": torch.randn((), generator=g),
        "model/dense/W": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "model/empty": torch.zeros(0, 3),
        "counts/int32": torch.randint(-2**31, 2**31 - 1, (3, 4), generator=g, dtype=torch.int32),
        "counts/int64": torch.tensor([-(2**62), -1, 0, 2**62 + 12345], dtype=torch.int64),
        "counts/uint8": torch.randint(0, 256, (5,), generator=g, dtype=torch.uint8),
        "counts/int16": torch.randint(-2**15, 2**15 - 1, (5,), generator=g, dtype=torch.int16),
        "counts/int8": torch.randint(-128, 127, (5,), generator=g, dtype=torch.int8),
        "half/float16": torch.randn(3, 2, generator=g).half(),
        "half/bfloat16": torch.randn(2, 9, generator=g).bfloat16(),
        "flags": torch.tensor([[True, False, True], [False, False, True]]),
        "global_step": torch.tensor(123456789, dtype=torch.int64),
    }


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert got[name].device.type == "cpu"
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("entries_per_block, restart_interval", [(3, 2), (4, 3), (1, 1), (100, 16)])
def test_round_trip(tmp_path: Path, entries_per_block: int, restart_interval: int) -> None:
    want = sample_tensors()
    prefix = tmp_path / "model.ckpt"
    num_blocks = write_bundle(prefix, [Spec(n, t) for n, t in want.items()],
                              entries_per_block=entries_per_block, restart_interval=restart_interval)
    if entries_per_block < 100:
        assert num_blocks >= 2  # the index block has several entries
    got = read_tf_checkpoint(prefix)
    assert_same(got, want)
    assert list(got) == sorted(want, key=str.encode)  # in the index's (byte-wise sorted) order
    got["model/conv2d_0/V"].add_(1)  # results own their memory and are writable
    assert torch.equal(read_tf_checkpoint(prefix)["model/conv2d_0/V"], want["model/conv2d_0/V"])


def test_several_shards(tmp_path: Path) -> None:
    want = sample_tensors()
    prefix = tmp_path / "sharded.ckpt"
    write_bundle(prefix, [Spec(n, t, shard=i % 3) for i, (n, t) in enumerate(want.items())], num_shards=3)
    assert_same(read_tf_checkpoint(prefix), want)


def test_empty_bundle(tmp_path: Path) -> None:
    write_bundle(tmp_path / "empty", [])
    assert read_tf_checkpoint(tmp_path / "empty") == {}


@pytest.mark.parametrize("suffix", ["", ".index", ".data-00000-of-00001"])
def test_accepts_prefix_index_and_data_paths(tmp_path: Path, suffix: str) -> None:
    prefix = tmp_path / "params_cifar.ckpt"
    write_bundle(prefix, [Spec("a", torch.arange(3.0))])
    assert tf_checkpoint_prefix(f"{prefix}{suffix}") == str(prefix)
    assert tf_checkpoint_prefix(Path(f"{prefix}{suffix}")) == str(prefix)
    assert torch.equal(read_tf_checkpoint(Path(f"{prefix}{suffix}"))["a"], torch.arange(3.0))


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(TFCheckpointError, match=r"nothing\.ckpt\.index.*not found"):
        tf_checkpoint_prefix(tmp_path / "nothing.ckpt")
    with pytest.raises(TFCheckpointError, match=r"nothing\.ckpt\.index"):
        read_tf_checkpoint(tmp_path / "nothing.ckpt.index")
    v1 = tmp_path / "v1.ckpt"
    v1.write_bytes(b"old")
    with pytest.raises(TFCheckpointError, match="V1"):
        read_tf_checkpoint(v1)


def test_missing_data_shard(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("w", torch.ones(2))])
    Path(f"{prefix}.data-00000-of-00001").unlink()
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.data-00000-of-00001"):
        read_tf_checkpoint(prefix)


def test_bad_magic(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("w", torch.ones(2))])
    index = Path(f"{prefix}.index")
    index.write_bytes(index.read_bytes()[:-8] + struct.pack("<Q", MAGIC ^ 1))
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index.*not a TensorFlow V2 checkpoint index"):
        read_tf_checkpoint(prefix)


def test_truncated_index(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec(n, t) for n, t in sample_tensors().items()])
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index"):
        read_tf_checkpoint(prefix)
    index.write_bytes(data[:20])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index.*too short"):
        read_tf_checkpoint(prefix)


def test_garbled_index_never_escapes_as_another_error(tmp_path: Path) -> None:
    """Every single-byte corruption and every truncation either still reads or raises TFCheckpointError."""
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec(n, t) for n, t in list(sample_tensors().items())[:5]])
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    variants = [data[:i] for i in range(0, len(data), 7)]
    variants += [data[:i] + bytes([data[i] ^ flip]) + data[i + 1:] for i in range(len(data)) for flip in (0x80, 0xFF)]
    for variant in variants:
        index.write_bytes(variant)
        try:
            read_tf_checkpoint(prefix)
        except TFCheckpointError:
            pass


@pytest.mark.parametrize("header,match", [
    (dict(data_block_type=1), "Snappy"),
    (dict(data_block_type=7), "compression type 7"),
    (dict(endianness=1), "big-endian"),
    (dict(min_consumer=5), "version"),
])
def test_refused_bundle_headers(tmp_path: Path, header: dict, match: str) -> None:
    """Snappy or unknown block compression, a big-endian bundle, a newer format version."""
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("w", torch.ones(2))], **header)
    with pytest.raises(TFCheckpointError, match=rf"m\.ckpt\.index.*{match}"):
        read_tf_checkpoint(prefix)


def test_partitioned_variable(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("ok", torch.ones(2)), Spec("model/emb", torch.ones(4, 2), num_slices=2)])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index.*'model/emb'.*partitioned"):
        read_tf_checkpoint(prefix)


def test_size_mismatch(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("model/b", torch.ones(3), size=8)])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index.*'model/b'.*size 8.*expected 12"):
        read_tf_checkpoint(prefix)


def test_offset_beyond_data_file(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("a", torch.ones(3)), Spec("model/b", torch.ones(3), offset=100)])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.data-00000-of-00001.*'model/b'.*\[100, 112\)"):
        read_tf_checkpoint(prefix)


def test_invalid_shape(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    write_bundle(prefix, [Spec("model/b", torch.ones(3), shape=(-1,))])
    with pytest.raises(TFCheckpointError, match=r"m\.ckpt\.index.*'model/b'.*shape"):
        read_tf_checkpoint(prefix)


def test_unsupported_dtype_is_skipped_and_reported(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    # A DT_STRING tensor as TF stores it: varint lengths, a 4-byte length checksum, then the bytes.
    strings = b"\x02\x03" + b"\0\0\0\0" + b"hiabc"
    write_bundle(prefix, [Spec("w", torch.ones(2)), Spec("model/names", dtype=DT_STRING, raw=strings, shape=(2,))])
    skipped: list[str] = []
    got = read_tf_checkpoint(prefix, skipped=skipped)
    assert list(got) == ["w"] and torch.equal(got["w"], torch.ones(2))
    assert skipped == ["model/names"]
    assert list(read_tf_checkpoint(prefix)) == ["w"]  # without the list, skipped quietly


def test_index_handles_that_repeat_a_block_are_refused(tmp_path: Path) -> None:
    """Handles pointing at one block again and again would make a small file decode it over and over."""
    block = build_block([(b"", header_proto())], 1)
    handle = varint(0) + varint(len(block))
    out = bytearray(block + b"\0\xde\xad\xbe\xef")
    index = build_block([(b"k%05d" % i, handle) for i in range(1000)], 1)
    index_handle = varint(len(out)) + varint(len(index))
    out += index + b"\0\xde\xad\xbe\xef"
    out += (varint(0) + varint(0) + index_handle).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    (tmp_path / "ckpt.index").write_bytes(bytes(out))
    with pytest.raises(TFCheckpointError, match="overlaps another block"):
        read_tf_checkpoint(tmp_path / "ckpt")


def test_select_reads_only_the_tensors_it_accepts(tmp_path: Path) -> None:
    tensors = sample_tensors()
    write_bundle(tmp_path / "ckpt", [Spec(name, t) for name, t in tensors.items()])
    got = read_tf_checkpoint(tmp_path / "ckpt", select=lambda name: name.startswith("counts/"))
    assert_same(got, {name: t for name, t in tensors.items() if name.startswith("counts/")})
