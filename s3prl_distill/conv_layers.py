"""fairseq's and S3PRL's conv-layer strings (``conv_feature_layers``,
``extractor_conv_feature_layers``): the one parser, which never evaluates code.

Both fairseq and S3PRL ``eval`` a string such as ``"[(512,10,5)] + [(512,3,2)] * 4 +
[(512,2,2)] * 2"``; checkpoints and configs of theirs carry it. :func:`parse_conv_layers` reads the
tiny language those strings use (int literals, ``(channels, kernel, stride)`` tuples or 3-lists,
lists of them, ``+`` and ``* n``) with :mod:`ast`, bounded in size, depth and repeat count (a
``* 10**12`` repeat would otherwise exhaust memory), and refuses anything else naming the key.
"""

from __future__ import annotations

import ast
from typing import Any, List, Tuple

from s3prl_distill.config import ConfigError

__all__ = ["MAX_CONV_LAYERS", "parse_conv_layers"]

#: the longest conv stack a spec may describe (HuBERT's has 7, FitHuBERT's 9); bounds ``* n``
MAX_CONV_LAYERS = 64

def _conv_value(node: ast.AST, text: str, where: str) -> Any:
    """Evaluate the tiny language of S3PRL's conv-layer strings: int literals, (c, k, s) tuples
    (or 3-lists), lists of them, ``list + list`` and ``list * n`` / ``n * list``. Nothing else."""
    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: {what} in {text!r}; expected a list of (channels, kernel, stride) "
                           "tuples, joined by + and repeated by * n")

    if isinstance(node, ast.Constant):
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        raise bad(f"unexpected value {node.value!r}")
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_conv_value(e, text, where) for e in node.elts]
        if isinstance(node, ast.Tuple) or (len(items) == 3 and all(isinstance(v, int) for v in items)):
            if len(items) != 3 or not all(isinstance(v, int) for v in items):
                raise bad(f"a layer must be 3 integers, got {ast.unparse(node)}")
            return ("layer", tuple(items))
        if not all(isinstance(v, tuple) and v[0] == "layer" for v in items):
            raise bad(f"a list must hold (channels, kernel, stride) layers, got {ast.unparse(node)}")
        return [v[1] for v in items]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _conv_value(node.left, text, where), _conv_value(node.right, text, where)
        if isinstance(left, list) and isinstance(right, list):
            return left + right
        raise bad(f"+ joins lists only: {ast.unparse(node)}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _conv_value(node.left, text, where), _conv_value(node.right, text, where)
        if isinstance(left, int) and isinstance(right, list):
            left, right = right, left
        if isinstance(left, list) and isinstance(right, int) and right >= 0:
            if len(left) * right > MAX_CONV_LAYERS:
                raise bad(f"more than {MAX_CONV_LAYERS} layers")
            return left * right
        raise bad(f"* repeats a list by a count >= 0: {ast.unparse(node)}")
    raise bad(f"unsupported expression {ast.unparse(node)!r}")


def parse_conv_layers(spec: Any, where: str = "extractor_conv_feature_layers") -> List[Tuple[int, int, int]]:
    """Parse S3PRL's conv-layer spec without ``eval``.

    Args:
        spec: the string S3PRL evaluates, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, or a YAML
            list of ``[channels, kernel, stride]`` (S3PRL ``str()``-s and evaluates that too).
        where: names the key in errors.
    Returns:
        ``[(channels, kernel, stride), ...]``, each value >= 1.
    Raises:
        ConfigError: naming ``where`` and the part that is not of that form.
    """
    if not isinstance(spec, (str, list, tuple)):
        raise ConfigError(f"{where}: expected a string like '[(512,10,5)] + [(512,3,2)] * 4', got {spec!r}")
    text = spec if isinstance(spec, str) else repr(spec)
    if len(text) > 10_000:
        raise ConfigError(f"{where}: {len(text)} characters is not a conv-layer spec")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        value = _conv_value(tree.body, text, where)
    except SyntaxError as err:
        raise ConfigError(f"{where}: cannot read {text!r}: {err.msg}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{where}: {text[:80]!r}... is nested too deeply") from None
    if isinstance(value, tuple) and value[0] == "layer":
        value = [value[1]]
    if not isinstance(value, list) or not value or len(value) > MAX_CONV_LAYERS:
        raise ConfigError(f"{where}: expected 1 to {MAX_CONV_LAYERS} (channels, kernel, stride) layers, "
                          f"got {text!r}")
    for layer in value:
        if min(layer) < 1:
            raise ConfigError(f"{where}: channels, kernel and stride must be >= 1, got {layer} in {text!r}")
    return [tuple(layer) for layer in value]
