"""Strict typed-config loading: every kind of mistake names the file and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple

import pytest

from s3prl_distill.config import ConfigError, from_dict, load_section, load_yaml, to_dict


@dataclass
class Inner:
    dim: int
    rate: float = 1.0

    def validate(self) -> None:
        if self.dim <= 0:
            raise ConfigError(f"dim: must be positive, got {self.dim}")


@dataclass
class Outer:
    name: str
    inner: Inner
    kind: Literal["a", "b"] = "a"
    layers: List[int] = field(default_factory=list)
    pair: Tuple[int, int] = (1, 2)
    extra: Optional[Dict[str, float]] = None
    flag: bool = False


def test_builds_nested_and_converts_containers():
    cfg = from_dict(Outer, {"name": "x", "inner": {"dim": 3, "rate": 2}, "layers": [4, 8], "pair": [5, 6]})
    assert cfg.inner == Inner(dim=3, rate=2.0)
    assert isinstance(cfg.inner.rate, float)
    assert cfg.pair == (5, 6)
    assert to_dict(cfg) == {
        "name": "x", "inner": {"dim": 3, "rate": 2.0}, "kind": "a", "layers": [4, 8],
        "pair": [5, 6], "extra": None, "flag": False,
    }
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "inner": {"dim": 3}, "typo": 1}, "m.yaml: s: unknown key(s) ['typo']"),
        ({"inner": {"dim": 3}}, "missing required key 'name'"),
        ({"name": "x", "inner": {"dim": "3"}}, "m.yaml: s.inner.dim: expected an integer"),
        ({"name": "x", "inner": {"dim": True}}, "s.inner.dim: expected an integer"),
        ({"name": "x", "inner": {"dim": 3}, "kind": "c"}, "s.kind: expected one of ['a', 'b']"),
        ({"name": "x", "inner": {"dim": 3}, "layers": [1, "2"]}, "s.layers[1]: expected an integer"),
        ({"name": "x", "inner": {"dim": 3}, "pair": [1]}, "s.pair: expected 2 items"),
        ({"name": "x", "inner": {"dim": 3}, "flag": "yes"}, "s.flag: expected true or false"),
        ({"name": "x", "inner": {"dim": 0}}, "s.inner: dim: must be positive"),
        ({"name": "x", "inner": {"dim": 3}, "extra": {"a": "b"}}, "s.extra: expected"),
        ({"name": "x", "inner": {"dim": 3, "rate": "fast"}}, "s.inner.rate: expected a number"),
        ({"name": "x", "inner": {"dim": 3, "rate": "1e-4x"}}, "s.inner.rate: expected a number"),
    ],
)
def test_errors_name_location(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data, where="m.yaml: s")
    assert message in str(info.value)


def test_yaml_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("s:\n  name: x\n  inner: {dim: 2}\n")
    assert load_section(Outer, good, "s").inner.dim == 2
    with pytest.raises(ConfigError, match="missing top-level key 't'"):
        load_section(Outer, good, "t")
    bad = tmp_path / "bad.yaml"
    bad.write_text("s: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_yaml(listy)
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_yaml11_scientific_floats_are_numbers(tmp_path):
    """PyYAML reads `rate: 1e-4` (no dot) as a string; a float field takes it as the number."""
    path = tmp_path / "sci.yaml"
    path.write_text("s:\n  name: x\n  inner: {dim: 2, rate: 1e-4}\n  extra: {a: 5E+3, b: -.5e2}\n")
    assert load_yaml(path)["s"]["inner"]["rate"] == "1e-4"
    cfg = load_section(Outer, path, "s")
    assert cfg.inner.rate == 1e-4 and cfg.extra == {"a": 5000.0, "b": -50.0}


def test_yaml_never_constructs_python_objects(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("s: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(evil)


def test_duplicate_keys_are_refused_naming_file_key_and_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `runner:` would silently replace the first."""
    path = tmp_path / "runner.yaml"
    path.write_text("runner:\n  total_steps: 10\n  log_step: 5\noptimizer:\n  lr: 1.0\n"
                    "runner:\n  save_step: 2\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value).startswith(f"{path}: key 'runner' is given twice (lines 1 and 6)")
    nested = tmp_path / "nested.yaml"
    nested.write_text("s:\n  name: x\n  inner: {dim: 2, dim: 3}\n")
    with pytest.raises(ConfigError, match=r"nested.yaml: key 'dim' is given twice \(lines 3 and 3\)"):
        load_section(Outer, nested, "s")


def test_merge_keys_and_equal_keys_in_different_mappings_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {dim: 2, rate: 1.0}\ns:\n  name: x\n  inner:\n    <<: *b\n    dim: 5\n"
                    "t:\n  name: y\n  inner: {dim: 2}\n")
    data = load_yaml(path)
    assert data["s"]["inner"] == {"dim": 5, "rate": 1.0} and data["t"]["inner"] == {"dim": 2}
