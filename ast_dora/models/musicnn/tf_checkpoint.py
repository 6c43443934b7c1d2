"""Read a TensorFlow 1 checkpoint (`<prefix>.index` + `<prefix>.data-00000-of-00001`) with numpy alone.

The `.index` is a LevelDB table (blocks of prefix-compressed key/value entries, uncompressed) mapping each
variable name to a serialized `BundleEntryProto` (dtype field 1, shape 2, shard 3, offset 4, size 5); the tensor is
`size` raw little-endian bytes at `offset` of data shard `shard`. The protobuf varints are parsed here by hand, so
TensorFlow is not needed. Conversion-time code: not remote code, never loaded with a saved model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# tensorflow/core/framework/types.proto DataType values -> numpy.
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_, 19: np.float16}
_FOOTER_SIZE = 48
_TABLE_MAGIC = 0xDB4775248B80FB57
_BLOCK_TRAILER = 5  # compression type byte + crc32


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _fields(message: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varint / fixed, bytes for length-delimited."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(message, position)
        elif wire == 1:
            value, position = int.from_bytes(message[position : position + 8], "little"), position + 8
        elif wire == 2:
            length, position = _varint(message, position)
            value, position = message[position : position + length], position + length
        elif wire == 5:
            value, position = int.from_bytes(message[position : position + 4], "little"), position + 4
        else:
            raise ValueError(f"Unsupported protobuf wire type {wire} in a checkpoint index entry.")
        yield number, wire, value


def _block_entries(table: bytes, offset: int, size: int):
    """(key, value) pairs of one table block."""
    block = table[offset : offset + size]
    if table[offset + size] != 0:
        raise ValueError("The checkpoint index has a compressed block; only uncompressed tables are read.")
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 * (num_restarts + 1)
    position, key = 0, b""
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        value_length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        yield key, block[position : position + value_length]
        position += value_length


def read_index(index_path: str | Path) -> dict[str, dict]:
    """Variable name -> {"dtype", "shape", "shard", "offset", "size"} from a checkpoint's `.index` file."""
    table = Path(index_path).read_bytes()
    footer = table[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise ValueError(f"{index_path} is not a TensorFlow checkpoint index (no LevelDB table magic).")
    _, position = _varint(footer, 0)  # metaindex handle offset
    _, position = _varint(footer, position)  # and size
    index_offset, position = _varint(footer, position)
    index_size, _ = _varint(footer, position)
    entries = {}
    for _, handle in _block_entries(table, index_offset, index_size):
        block_offset, position = _varint(handle, 0)
        block_size, _ = _varint(handle, position)
        for key, value in _block_entries(table, block_offset, block_size):
            if not key:  # the empty key holds the BundleHeaderProto
                continue
            entry = {"dtype": 1, "shape": [], "shard": 0, "offset": 0, "size": 0}
            for number, _, field_value in _fields(value):
                if number == 1:
                    entry["dtype"] = field_value
                elif number == 2:
                    entry["shape"] = [
                        next((v for n, _, v in _fields(dim) if n == 1), 0)
                        for n, _, dim in _fields(field_value)
                        if n == 2
                    ]
                elif number in (3, 4, 5):
                    entry[("shard", "offset", "size")[number - 3]] = field_value
            entries[key.decode()] = entry
    return entries


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of the checkpoint at `prefix` (the path without `.index`) as a numpy array."""
    prefix = str(prefix)
    index = read_index(prefix + ".index")
    shards: dict[int, bytes] = {}
    tensors = {}
    for name, entry in index.items():
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"Checkpoint variable {name} has an unsupported dtype code {entry['dtype']}.")
        shard = entry["shard"]
        if shard not in shards:
            shards[shard] = Path(f"{prefix}.data-{shard:05d}-of-00001").read_bytes()
        raw = shards[shard][entry["offset"] : entry["offset"] + entry["size"]]
        array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"))
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors


__all__ = ["read_checkpoint", "read_index"]
