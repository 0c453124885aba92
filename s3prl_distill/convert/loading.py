"""Reading published checkpoints without executing pickled code.

Every file is read with ``torch.load(weights_only=True)``. What the published formats pickle
beyond tensors and plain data is allowed by name, never imported:

* S3PRL's ``argparse.Namespace`` and its optimizer schedules: the allow-list of
  :func:`s3prl_distill.compat.allow_s3prl_checkpoints` (the same one every S3PRL checkpoint
  read in this package uses);
* PyTorch Lightning checkpoints (the official FitHuBERT ``.ckpt``) may pickle objects of
  ``pytorch_lightning`` / ``lightning`` / ``torchmetrics`` / ``omegaconf`` classes (hyper-parameter
  containers, metric states) and refer to reduction functions such as ``torch.mean``. Each such
  name found in the file's pickle (listed by :mod:`pickletools`, which executes nothing) gets an
  inert stand-in: dict-like containers (``AttributeDict``) become plain dicts, anything else an
  :class:`InertObject` that only keeps the data the pickle hands it. None of those modules is
  imported and no code of theirs runs.

Any other global is refused with the file and the name, as weights_only loading does.
"""

from __future__ import annotations

import _compat_pickle
import io
import logging
import os
import pickletools
import zipfile
from typing import Any, Dict, List, Set, Tuple

import torch

from s3prl_distill.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["InertObject", "pickled_globals", "stand_ins", "load_published"]

#: modules whose pickled objects may get inert stand-ins (Lightning checkpoints' bookkeeping)
STAND_IN_MODULES = ("pytorch_lightning", "lightning", "lightning_fabric", "torchmetrics", "omegaconf")
#: single names that may get inert stand-ins: what Lightning's metric state refers to (its
#: reduction functions such as torch.mean pickle as getattr(torch._C._VariableFunctionsClass, "mean"))
STAND_IN_NAMES = ("typing.Any", "builtins.getattr", "torch._C._VariableFunctionsClass",
                  "torch._C._VariableFunctions", "torch.mean", "torch.sum", "torch.max", "torch.min")
#: class names of dict subclasses that become plain dicts
DICT_LIKE = ("AttributeDict",)


class InertObject:
    """Stand-in for a pickled object whose class is not imported: keeps what the pickle gives.

    Attributes:
        pickled_name: ``module.qualname`` the pickle referred to.
        args: positional arguments the pickle called it with; ``state``: what it built it from.
    """

    pickled_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.pickled_name}>"


def _inert_getattr(owner: Any, name: str) -> InertObject:
    """Stand-in for ``builtins.getattr`` in a pickle: names the attribute, looks nothing up."""
    obj = InertObject()
    obj.pickled_name = f"{getattr(type(owner), 'pickled_name', type(owner).__name__)}.{name}"
    return obj


def _pickle_streams(path: str) -> List[bytes]:
    """The pickle(s) of a torch file: ``data.pkl`` of a zip file, else the legacy file's header
    pickles and object (everything before its raw storages)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
            return [archive.read(n) for n in names[:1]]
    with open(path, "rb") as handle:
        data = handle.read()
    streams, offset = [], 0
    for _ in range(4):  # magic number, protocol, sys info, object
        stream = io.BytesIO(data[offset:])
        try:
            for _op in pickletools.genops(stream):
                pass
        except Exception:  # not a pickle at all: torch.load reports it
            break
        streams.append(data[offset: offset + stream.tell()])
        offset += stream.tell()
    return streams


def pickled_globals(path: str) -> Set[str]:
    """``module.name`` of every global the file's pickle refers to (nothing is executed)."""
    found: Set[str] = set()
    for stream in _pickle_streams(path):
        strings: List[str] = []
        try:
            for op, arg, _pos in pickletools.genops(io.BytesIO(stream)):
                if op.name == "GLOBAL":
                    module, name = str(arg).split(" ", 1)
                    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
                    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
                    found.add(f"{module}.{name}")
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # a damaged pickle: torch.load reports it
            continue
    return found


def _may_stand_in(name: str) -> bool:
    return name in STAND_IN_NAMES or name.split(".", 1)[0] in STAND_IN_MODULES


def stand_ins(names: Set[str]) -> List[Tuple[object, str]]:
    """(stand-in, pickled name) pairs for the names that may get one (see the module docstring)."""
    pairs: List[Tuple[object, str]] = []
    for name in sorted(names):
        if not _may_stand_in(name):
            continue
        if name == "builtins.getattr":
            pairs.append((_inert_getattr, name))
        elif name.rsplit(".", 1)[-1] in DICT_LIKE:
            pairs.append((dict, name))
        else:
            cls = type(name.rsplit(".", 1)[-1], (InertObject,), {"pickled_name": name})
            pairs.append((cls, name))
    return pairs


def _reason(err: BaseException) -> str:
    """The informative part of a torch.load error (weights_only errors bury it mid-text)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        if lines and not lines[0].startswith("Check the documentation"):
            return lines[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_published(path: str, formats: str) -> Any:
    """Load a published checkpoint file safely (see the module docstring).

    Args:
        formats: the formats ``convert`` understands, named in the error of an unreadable file.
    Raises:
        CheckpointError: naming the file (and the pickled name that is not allowed).
    """
    from s3prl_distill import compat

    if hasattr(compat, "allow_s3prl_checkpoints"):
        compat.allow_s3prl_checkpoints()
    pairs = stand_ins(pickled_globals(path))
    try:
        with torch.serialization.safe_globals(pairs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types with long texts
        if isinstance(err, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        first = _reason(err)
        raise CheckpointError(
            f"{path}: cannot be read safely as a checkpoint ({first}); convert reads {formats}"
        ) from err
