"""Reading fairseq ``.pt`` checkpoints without fairseq and without running pickled code.

**Why this loader is safe.** A fairseq ``.pt`` pickles, beside the tensors, an
``argparse.Namespace`` (``"args"``, old checkpoints), an omegaconf ``DictConfig`` (``"cfg"``,
newer ones: ``DictConfig``/``ListConfig``/``*Node``/``*Metadata`` objects, ``typing.Any``,
``collections.defaultdict``) and, in HuBERT's ``task_state``, fairseq ``Dictionary`` objects. A
plain ``torch.load`` would import and run whatever the pickle names. We use torch's own
``weights_only=True`` unpickler (only tensors and plain containers) and, for the duration of the
call, allow *exactly* those class names - each mapped to an inert stand-in that only records the
pickled state (:class:`PickledObject`; no ``__setstate__`` logic, no imports of omegaconf/fairseq),
plus the harmless builtin constructors the omegaconf metadata names (``dict``, ``list``, ``int``,
...). Any other global in the file is refused with an error naming it. This keeps torch's tested
allow-list for tensor rebuilding (a hand-written unpickler would have to re-implement it) and
needs neither fairseq nor omegaconf installed. The stand-ins are then turned into plain data
(:func:`to_plain`).
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch

from s3prl_distill.teachers.base import TeacherError

__all__ = ["PickledObject", "STAND_IN_CLASSES", "HARMLESS_BUILTINS", "safe_load_fairseq", "to_plain"]


class PickledObject:
    """Inert stand-in for an allow-listed pickled class: keeps the class name and the state.

    Attributes:
        pickled_class (str): e.g. ``"omegaconf.dictconfig.DictConfig"``.
        state: what the pickle's BUILD step passed (usually a dict), else ``None``.
        args: constructor arguments the pickle gave (NEWOBJ / REDUCE).
    """

    pickled_class = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["state"] = None
        return obj

    def __init__(self, *args, **kwargs) -> None:  # REDUCE calls cls(*args): nothing to do
        pass

    def __setstate__(self, state) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


#: the only non-tensor classes a fairseq checkpoint may name (each becomes a PickledObject)
STAND_IN_CLASSES = (
    "argparse.Namespace",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
    "omegaconf.nodes.EnumNode",
    "fairseq.data.dictionary.Dictionary",
    "typing.Any",
)

#: builtin constructors named by omegaconf metadata (type annotations): harmless to call
HARMLESS_BUILTINS = {
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.str": str,
    "builtins.bool": bool,
    "builtins.tuple": tuple,
    "builtins.object": object,
    "pathlib.PosixPath": str,
    "pathlib.Path": str,
}


def _plain_defaultdict(*_args) -> dict:
    """Stand-in for ``collections.defaultdict(factory)``: a plain dict (the factory is dropped)."""
    return {}


_STAND_INS = {name: type(name.rsplit(".", 1)[1], (PickledObject,), {"pickled_class": name}) for name in STAND_IN_CLASSES}


def _safe_globals() -> List[Tuple[Any, str]]:
    allowed = [(cls, name) for name, cls in _STAND_INS.items()]
    allowed += [(fn, name) for name, fn in HARMLESS_BUILTINS.items()]
    allowed.append((_plain_defaultdict, "collections.defaultdict"))
    return allowed


def safe_load_fairseq(path: str) -> Dict[str, Any]:
    """Load a fairseq checkpoint with ``weights_only=True`` and the stand-ins above.

    Returns:
        the checkpoint dict with tensors as tensors and every other object as plain data
        (``args``/``cfg`` become nested dicts; see :func:`to_plain`).
    Raises:
        TeacherError: naming the path: missing, not a checkpoint, or a pickled global outside the
            allow-list (named in the message).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TeacherError(f"teacher.path {path}: no such file (expected a fairseq .pt checkpoint)")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError / RuntimeError with long text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        match = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it pickles {match.group(1)}, which is not on the allow-list" if match else first
        raise TeacherError(
            f"teacher.path {path}: cannot be read safely as a fairseq checkpoint: {what}. Only "
            f"tensors, plain data and {', '.join(STAND_IN_CLASSES)} are accepted (no pickled code "
            "is ever run)."
        ) from err
    if not isinstance(data, Mapping):
        raise TeacherError(f"teacher.path {path}: expected a checkpoint dict, got {type(data).__name__}")
    return {k: to_plain(v) for k, v in data.items()}


def to_plain(obj: Any) -> Any:
    """Turn stand-ins (``DictConfig``, ``Namespace``, nodes, ...) into plain dicts/lists/values."""
    if isinstance(obj, PickledObject):
        state = obj.state if obj.state is not None else {}
        name = obj.pickled_class
        if name in ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig"):
            content = state.get("_content") if isinstance(state, dict) else None
            if isinstance(content, str):  # "???" (missing) or an interpolation of the whole node
                return None if content == "???" else content
            return to_plain(content)
        if name.startswith("omegaconf.nodes."):
            value = state.get("_val") if isinstance(state, dict) else None
            return None if value == "???" else to_plain(value)
        if name == "typing.Any":
            return "typing.Any"
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], (dict, type(None))):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            return {k: to_plain(v) for k, v in state.items()}
        return to_plain(state)
    if isinstance(obj, argparse.Namespace):  # the real class, if someone allow-listed it globally
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    return obj
