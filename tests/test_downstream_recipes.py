"""Our SUPERB recipe configs equal S3PRL's original downstream configs, key by key.

``downstream_recipes/s3prl_reference.yaml`` holds, per task, every key and value of S3PRL 0.4.18's
``s3prl/downstream/<task>`` config (commit ec8064b5; transcribed once as figures, the files are
not copied): ``values`` (hyperparameters, must be equal), ``paths`` (data locations that run.sh
sets: the key must exist, any value) and ``differences`` (deliberate ones: S3PRL's value, ours,
why; each also named in ``downstream_recipes/README.md``). A recipe edit that changes a
hyperparameter, drops a key or adds one fails here until the table says why.

Where a copy of S3PRL's git history is at hand (``$S3PRL_GIT_DIR``, default the bare mirror
``/work/.mirror/s3prl+s3prl/repo``), the table itself is re-derived from it; otherwise that one
test is skipped.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "downstream_recipes"
REFERENCE = RECIPES / "s3prl_reference.yaml"
ABSENT = "<absent>"
TASKS = ("pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "asv", "sd")


def flatten(data: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested mappings -> {"a.b.c": leaf}; an empty mapping is a leaf ({})."""
    if isinstance(data, dict) and data:
        out: Dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def load_reference() -> Dict[str, Any]:
    with open(REFERENCE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def ours(task: str) -> Dict[str, Any]:
    with open(RECIPES / task / "config.yaml", encoding="utf-8") as f:
        return flatten(yaml.safe_load(f))


def test_reference_covers_every_recipe():
    ref = load_reference()
    assert ref["source"]["commit"] == "ec8064b5889f81ca460fbe2c094ce576a6f120b7"
    assert set(ref["tasks"]) == set(TASKS)
    assert {p.parent.name for p in RECIPES.glob("*/config.yaml")} == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_recipe_equals_s3prl_original(task):
    entry = load_reference()["tasks"][task]
    mine = ours(task)
    differences = entry.get("differences") or {}
    problems = []
    for key, value in entry["values"].items():
        if key not in mine:
            problems.append(f"missing {key} (S3PRL: {value!r})")
        elif mine[key] != value or isinstance(mine[key], bool) != isinstance(value, bool):
            problems.append(f"{key}: ours {mine[key]!r}, S3PRL {value!r}")
    for key in entry["paths"]:
        if key not in mine:
            problems.append(f"missing path key {key} (run.sh sets it; S3PRL's schema has it)")
    for key, diff in differences.items():
        assert key not in entry["values"] and key not in entry["paths"], key
        assert diff.get("why"), f"{key}: a difference needs its reason"
        got = mine.get(key, ABSENT)
        if got != diff["ours"]:
            problems.append(f"{key}: ours {got!r}, the table records ours as {diff['ours']!r} "
                            f"(S3PRL: {diff['s3prl']!r}); update the recipe or the table and README")
    allowed = set(entry["values"]) | set(entry["paths"]) | {
        k for k, d in differences.items() if d["ours"] != ABSENT}
    extra = sorted(set(mine) - allowed)
    if extra:
        problems.append(f"keys S3PRL's config does not have: {extra}")
    assert not problems, f"downstream_recipes/{task}/config.yaml vs {entry['file']}:\n  " + \
        "\n  ".join(problems)


def test_every_difference_is_explained_in_readme():
    readme = (RECIPES / "README.md").read_text(encoding="utf-8")
    for task, entry in load_reference()["tasks"].items():
        for key in entry.get("differences") or {}:
            short = key.split("downstream_expert.", 1)[-1]
            assert short in readme, f"README.md does not explain the {task} difference {key}"


def test_flatten_and_comparison_catch_drift(tmp_path, monkeypatch):
    """The checker fails on a changed value, a dropped key and an added key."""
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "a.c": {}, "d": [1, 2]}
    (tmp_path / "ks").mkdir()
    text = (RECIPES / "ks" / "config.yaml").read_text(encoding="utf-8")
    for bad in (text.replace("eval_step: 5000", "eval_step: 4000"),
                text.replace("  max_keep: 1\n", ""),
                text.replace("  max_keep: 1\n", "  max_keep: 1\n  fp16: true\n")):
        assert bad != text
        (tmp_path / "ks" / "config.yaml").write_text(bad, encoding="utf-8")
        monkeypatch.setattr(sys.modules[__name__], "RECIPES", tmp_path)
        with pytest.raises(AssertionError):
            test_recipe_equals_s3prl_original("ks")
        monkeypatch.undo()


def _git(git_dir: str, *args: str) -> bytes:
    return subprocess.check_output(["git", "-C", git_dir, *args], stderr=subprocess.DEVNULL)


def _s3prl_config(git_dir: str, commit: str, rel: str) -> Any:
    """S3PRL's YAML ``rel`` (under s3prl/downstream/) at ``commit``, following git symlinks."""
    path = f"s3prl/downstream/{rel}"
    mode = _git(git_dir, "ls-tree", commit, path).split()[0]
    text = _git(git_dir, "show", f"{commit}:{path}")
    if mode == b"120000":
        return _s3prl_config(git_dir, commit, posixpath.normpath(
            posixpath.join(posixpath.dirname(rel), text.decode().strip())))
    return yaml.safe_load(text)


def test_reference_table_matches_s3prl_source():
    git_dir = os.environ.get("S3PRL_GIT_DIR", "/work/.mirror/s3prl+s3prl/repo")
    ref = load_reference()
    commit = ref["source"]["commit"]
    try:
        _git(git_dir, "cat-file", "-e", f"{commit}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no S3PRL git history with commit {commit} at {git_dir} (set S3PRL_GIT_DIR)")
    for task, entry in ref["tasks"].items():
        rel = entry["file"].split()[0][len("s3prl/downstream/"):]
        theirs = flatten(_s3prl_config(git_dir, commit, rel))
        table = dict(entry["values"])
        table.update(entry["paths"])
        for key, diff in (entry.get("differences") or {}).items():
            if diff["s3prl"] != ABSENT:
                table[key] = diff["s3prl"]
        assert table == theirs, f"{task}: the table differs from {entry['file']} at {commit[:8]}"
