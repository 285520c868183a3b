"""A storage format for what lth_ray keeps between processes that cannot run code when read.

Anyone who can write to a sweep's storage (a shared folder, an S3 bucket) would otherwise choose
what every trial executes on resume: a pickle runs whatever it names. This format has no pickle in
it. A file is a magic line, the length of a JSON header, the header, then the raw bytes of the
tensors. The header is the object's tree in JSON, where only these shapes occur:

- JSON's own values (strings, numbers, true/false/null, lists, string-keyed mappings);
- `{"~t": i}`: the i-th tensor (dtype from an explicit list, shape, byte range);
- `{"~tuple": [...]}`, `{"~map": [[key, value], ...]}` (mappings with non-string keys);
- `{"~dc": name, "fields": {...}}`: a dataclass named in `DATACLASSES` (the training results).

Reading builds only those; a file that is not in this format, or names anything else, is refused
with `UnsafeStateError`. Floats go through JSON's shortest round-trip repr, and tensors byte for
byte, so a state read back is bit-identical to the one written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

import torch

MAGIC = b"LTHRAY-STATE/1\n"
_LEN = struct.Struct("<Q")
MAX_HEADER = 1 << 30  # a header is a few MB at most; a larger length field is a corrupt file

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class UnsafeStateError(ValueError):
    """A stored file that is not an lth_ray state (possibly crafted): it is never executed."""


def _dataclasses() -> dict[str, type]:
    """The only classes a state file may name (imported lazily: training imports this module)."""
    from lth_ray.lottery.train import EpochStats, TrainResult

    return {"TrainResult": TrainResult, "EpochStats": EpochStats}


def dumps(obj: Any) -> bytes:
    """`obj` (nested dicts, lists, tuples, scalars, tensors, training results) as bytes."""
    tensors: list[torch.Tensor] = []
    index: dict[int, int] = {}  # id(tensor) -> its slot: a tensor held twice is stored once
    classes = {cls: name for name, cls in _dataclasses().items()}

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, bool | str):
            return x
        if isinstance(x, int):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"~f": repr(x)}
        if isinstance(x, torch.Tensor):
            if id(x) not in index:
                if x.dtype not in _DTYPE_NAMES:
                    raise TypeError(f"cannot store a tensor of dtype {x.dtype}")
                index[id(x)] = len(tensors)
                tensors.append(x)
            return {"~t": index[id(x)]}
        if isinstance(x, tuple):
            return {"~tuple": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("~") for k in x):
                return {k: enc(v) for k, v in x.items()}
            return {"~map": [[enc(k), enc(v)] for k, v in x.items()]}
        if dataclasses.is_dataclass(x) and type(x) in classes:
            fields = {f.name: enc(getattr(x, f.name)) for f in dataclasses.fields(x)}
            return {"~dc": classes[type(x)], "fields": fields}
        raise TypeError(f"cannot store a {type(x).__name__} in a state file")

    tree = enc(obj)
    blobs, table, offset = [], [], 0
    for t in tensors:
        t = t.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        table.append({"dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape), "offset": offset})
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps({"tree": tree, "tensors": table}, allow_nan=False).encode()
    return MAGIC + _LEN.pack(len(header)) + header + b"".join(blobs)


def loads(data: bytes, name: str = "state") -> Any:
    """The object `dumps` wrote; anything else raises UnsafeStateError naming `name`."""

    def refuse(why: str) -> UnsafeStateError:
        return UnsafeStateError(
            f"{name}: refused, not an lth_ray state file ({why}); nothing in it was run."
            " Delete it to recompute that work, or check who else writes to this storage"
        )

    if not data.startswith(MAGIC):
        kind = "a pickle" if data[:1] == b"\x80" or data[:2] == b"PK" else "an unknown format"
        raise refuse(f"it is {kind}, not the '{MAGIC.decode().strip()}' format")
    body = memoryview(data)[len(MAGIC) :]
    if len(body) < _LEN.size:
        raise refuse("truncated header")
    (n,) = _LEN.unpack(body[: _LEN.size])
    if n > min(MAX_HEADER, len(body) - _LEN.size):
        raise refuse("header length past the end of the file")
    try:
        header = json.loads(bytes(body[_LEN.size : _LEN.size + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise refuse(f"header is not JSON: {e}") from None
    payload = body[_LEN.size + n :]
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise refuse("header without a tensor table")
    tensors = [_tensor(entry, payload, refuse) for entry in header["tensors"]]
    classes = _dataclasses()

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "~t" in x:
            i = x["~t"]
            if not isinstance(i, int) or not 0 <= i < len(tensors):
                raise refuse(f"tensor reference {i!r} out of range")
            return tensors[i]
        if "~f" in x:
            if x["~f"] not in ("nan", "inf", "-inf"):
                raise refuse(f"float {x['~f']!r}")
            return float(x["~f"])
        if "~tuple" in x:
            return tuple(dec(v) for v in x["~tuple"])
        if "~map" in x:
            return {_key(dec(k)): dec(v) for k, v in x["~map"]}
        if "~dc" in x:
            cls = classes.get(x["~dc"])
            if cls is None:
                raise refuse(f"names class {x['~dc']!r}, which is not on the allow-list")
            known = {f.name for f in dataclasses.fields(cls)}
            fields = x.get("fields", {})
            if not isinstance(fields, dict) or set(fields) - known:
                raise refuse(f"unknown fields of {x['~dc']}")
            return cls(**{k: dec(v) for k, v in fields.items()})
        if any(k.startswith("~") for k in x):
            raise refuse(f"unknown tag {next(k for k in x if k.startswith('~'))!r}")
        return {k: dec(v) for k, v in x.items()}

    def _key(k: Any) -> Any:
        if isinstance(k, list | dict):
            raise refuse("a mapping key that is a list or mapping")
        return k

    try:
        return dec(header.get("tree"))
    except RecursionError:
        raise refuse("nested too deeply") from None


def _tensor(entry: Any, payload: memoryview, refuse) -> torch.Tensor:
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
        raise refuse(f"tensor entry {entry!r} (allowed dtypes: {', '.join(DTYPES)})")
    dtype, shape, offset = DTYPES[entry["dtype"]], entry.get("shape"), entry.get("offset")
    if not (
        isinstance(shape, list)
        and all(isinstance(s, int) and s >= 0 for s in shape)
        and isinstance(offset, int)
        and offset >= 0
    ):
        raise refuse(f"tensor entry {entry!r}")
    size = torch.empty((), dtype=dtype).element_size() * math.prod(shape)
    if offset + size > len(payload):
        raise refuse("tensor data past the end of the file")
    if size == 0:
        return torch.empty(shape, dtype=dtype)
    raw = bytearray(payload[offset : offset + size])
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape)
