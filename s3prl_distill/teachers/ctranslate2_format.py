"""Read (and write) CTranslate2 ``model.bin`` files without CTranslate2.

Layout of binary version 6 (little-endian)::

    u32 version | str spec_name | u32 spec_revision | u32 num_variables
    num_variables x ( str name | u8 rank | rank x u32 dims | u8 dtype | u32 num_bytes | bytes )
    u32 num_aliases | num_aliases x ( str alias | str variable_name )

where ``str`` is a u16 byte count followed by the UTF-8 bytes and a terminating NUL, and dtype is
0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. The writer exists so tests (and
conversions) can produce files in the same layout.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Dict, Mapping

import numpy as np
import torch
from torch import Tensor

from s3prl_distill.teachers.base import TeacherError

__all__ = ["CT2Model", "read_model_bin", "write_model_bin", "SUPPORTED_VERSION"]

SUPPORTED_VERSION = 6
_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
_CODES = {v: k for k, v in _DTYPES.items()}


@dataclass
class CT2Model:
    """Contents of a ``model.bin``.

    Attributes:
        spec: spec name, e.g. ``"WhisperSpec"``.
        revision: spec revision.
        variables: name -> tensor (stored dtype, shape as stored).
        aliases: alias name -> variable name.
    """

    spec: str
    revision: int
    variables: Dict[str, Tensor]
    aliases: Dict[str, str]


class _Reader:
    def __init__(self, handle: BinaryIO, path: str, size: int) -> None:
        self.handle, self.path, self.size = handle, path, size

    def take(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise TeacherError(f"{self.path}: truncated CTranslate2 model.bin (wanted {n} bytes at {self.handle.tell()})")
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        raw = self.take(self.u16())
        return raw.rstrip(b"\0").decode("utf-8")


def read_model_bin(path: str) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6).

    Raises:
        TeacherError: naming the file: missing, another binary version, unknown dtype, truncated.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TeacherError(f"{path}: no such file (expected a CTranslate2 model.bin)")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        r = _Reader(handle, path, size)
        version = r.u32()
        if version != SUPPORTED_VERSION:
            raise TeacherError(
                f"{path}: CTranslate2 binary version {version} is not supported (expected {SUPPORTED_VERSION})"
            )
        spec = r.string()
        revision = r.u32()
        count = r.u32()
        variables: Dict[str, Tensor] = {}
        for _ in range(count):
            name = r.string()
            rank = r.u8()
            dims = tuple(r.u32() for _ in range(rank))
            code = r.u8()
            if code not in _DTYPES:
                raise TeacherError(f"{path}: variable {name!r} has unknown dtype code {code}")
            nbytes = r.u32()
            dtype = _DTYPES[code]
            itemsize = torch.empty((), dtype=dtype).element_size()
            numel = int(np.prod(dims)) if dims else 1
            if numel * itemsize != nbytes:
                raise TeacherError(f"{path}: variable {name!r}: {nbytes} bytes do not fit shape {dims} of {dtype}")
            raw = bytearray(r.take(nbytes))
            tensor = torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
            variables[name] = tensor.reshape(dims).clone()
        aliases: Dict[str, str] = {}
        for _ in range(r.u32()):
            alias = r.string()
            aliases[alias] = r.string()
    return CT2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def _write_string(handle: BinaryIO, text: str) -> None:
    raw = text.encode("utf-8") + b"\0"
    handle.write(struct.pack("<H", len(raw)))
    handle.write(raw)


def write_model_bin(
    path: str, spec: str, variables: Mapping[str, Tensor], revision: int = 3,
    aliases: Mapping[str, str] = (),
) -> None:
    """Write ``variables`` as a CTranslate2 ``model.bin`` (binary version 6), atomically."""
    from s3prl_distill.io import _atomic_replace

    def write(handle: BinaryIO) -> None:
        handle.write(struct.pack("<I", SUPPORTED_VERSION))
        _write_string(handle, spec)
        handle.write(struct.pack("<II", revision, len(variables)))
        for name, tensor in variables.items():
            tensor = tensor.detach().contiguous().cpu()
            if tensor.dtype not in _CODES:
                raise TeacherError(f"write_model_bin: {name}: dtype {tensor.dtype} has no CTranslate2 code")
            _write_string(handle, name)
            handle.write(struct.pack("<B", tensor.dim()))
            for d in tensor.shape:
                handle.write(struct.pack("<I", d))
            raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            handle.write(struct.pack("<BI", _CODES[tensor.dtype], len(raw)))
            handle.write(raw)
        alias_items = dict(aliases).items()
        handle.write(struct.pack("<I", len(alias_items)))
        for alias, target in alias_items:
            _write_string(handle, alias)
            _write_string(handle, target)

    _atomic_replace(path, write)

