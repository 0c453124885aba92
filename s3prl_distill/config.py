"""Typed configuration: YAML in, dataclasses out, clear errors naming the file and key.

Every config section of the package is a (frozen or plain) dataclass. :func:`from_dict` builds one
from plain YAML data, checking that

* every key is a field of the dataclass (unknown keys are errors, with the allowed keys listed),
* every required field is given,
* every value has the declared type (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
  ``Optional[...]``, ``List[...]``, ``Tuple[...]``, ``Dict[str, ...]``, nested dataclasses),

and then calls the dataclass's ``validate()`` method, if any, for cross-field rules (impossible
shapes). Errors are :class:`ConfigError` with a location such as
``upstream_configs/fithubert.yaml: student.encoder.num_heads``. Config strings are parsed, never evaluated as code.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Head:
    ...     dim: int
    ...     kind: str = "linear"
    >>> from_dict(Head, {"dim": 4}, where="demo.yaml: head")
    Head(dim=4, kind='linear')
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from typing import Any, Dict, Mapping, Optional, Type, TypeVar, Union

import yaml
from s3prl_distill.errors import UserError

T = TypeVar("T")

__all__ = ["ConfigError", "from_dict", "to_dict", "load_yaml", "parse_yaml", "load_section"]


class ConfigError(UserError):
    """A configuration value is missing, unknown, of the wrong type, or impossible."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first_line, self.line = key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    (PyYAML keeps the last value silently: a second ``runner:`` section would replace the first.)
    Merge keys (``<<: *anchor``) still override as YAML defines.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: PyYAML reports it itself
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, first, line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str = "<string>") -> Any:
    """Parse YAML text safely (no Python objects) and strictly (duplicate keys are errors).

    Raises:
        ConfigError: naming ``where`` (and the key and both lines of a duplicate key).
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise ConfigError(f"{where}: key {err.key!r} is given twice (lines {err.first_line} and "
                          f"{err.line}); YAML would keep only the second: remove one") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from err


def load_yaml(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a YAML file whose top level is a mapping (duplicate keys are errors).

    Raises:
        ConfigError: if the file is missing, is not valid YAML, gives a key twice in one mapping,
            or is not a mapping.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, "r", encoding="utf-8") as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not a UTF-8 text file ({err})") from err
    data = parse_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_section(cls: Type[T], path: Union[str, os.PathLike], section: str) -> T:
    """Build dataclass ``cls`` from the top-level key ``section`` of the YAML file ``path``."""
    data = load_yaml(path)
    if section not in data:
        raise ConfigError(f"{os.fspath(path)}: missing top-level key '{section}'")
    return from_dict(cls, data[section], where=f"{os.fspath(path)}: {section}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


# scientific notation without a dot (1e-4, 5E+3) that YAML 1.1 leaves as a string
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type annotation ``tp`` and convert containers/dataclasses."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, typing.List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_convert(item_tp, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin in (tuple, typing.Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}: {value!r}")
        return tuple(_convert(a, item, f"{where}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    if origin in (dict, typing.Dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = args or (Any, Any)
        return {
            _convert(key_tp, k, f"{where} (key {k!r})"): _convert(val_tp, v, f"{where}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads `lr: 1e-4` as the string '1e-4'
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r} in a config dataclass")


def from_dict(cls: Type[T], data: Optional[Mapping[str, Any]], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, strictly (see the module docstring).

    Args:
        cls: the dataclass type.
        data: plain data (as loaded from YAML); ``None`` means an empty mapping.
        where: location prefix for error messages, e.g. ``"model.yaml: student"``.

    Raises:
        ConfigError: naming ``where`` and the offending key.
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; allowed keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{name}' for {cls.__name__}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err
    return obj


def to_dict(obj: Any) -> Any:
    """Turn a (nested) config dataclass into plain YAML/JSON data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
