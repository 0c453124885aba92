"""What s3prl-distill relies on in S3PRL 0.4.18: each contract checked, so that a move fails here.

Read from the installed S3PRL's sources (``ast``, no heavy imports) where possible:

* the pretrain task contract: ``pretrain.<u>.pretrain_expert.UpstreamPretrainExpert`` and the
  methods S3PRL's ``pretrain/runner.py`` asserts; ``run_pretrain.py`` imports ``pretrain.runner``
  at its top (the import hook's trigger for the weights_only allow-list) and offers ``-u`` from the
  folders of ``pretrain/``; our ``pretrain/distiller/pretrain_expert.py``;
* no name of ours under ``pretrain/`` collides with S3PRL's (installed, and its 0.4.18 git checkout);
* ``s3prl.hub``, ``s3prl.upstream.interfaces.UpstreamBase``, the ``DownstreamExpert`` of every task
  the recipes run, the ctc readers' import names, the SID/ASV caches we redirect, the downstream
  runner names ``s3prl_distill.run_downstream`` patches, S3PRL's LR schedule classes.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Dict, Set

import s3prl_distill  # noqa: F401
from s3prl_distill import registry
from s3prl_distill.compat import weights_only

REPO = Path(__file__).resolve().parents[1]
S3PRL = Path(list(importlib.util.find_spec("s3prl").submodule_search_locations)[0])

#: ``s3prl/pretrain/`` of S3PRL 0.4.18's git repository (ec8064b5): name -> kind (facts)
S3PRL_0418_CHECKOUT_PRETRAIN = {
    "apc": "package", "audio_albert": "package", "distiller": "namespace", "mockingjay": "package",
    "npc": "package", "spec_augment": "package", "tera": "package", "vq_apc": "package",
    "bucket_dataset": "module", "runner": "module",
}


def _tree(relative: str) -> ast.Module:
    path = S3PRL / relative
    assert path.is_file(), f"S3PRL moved or removed {relative}"
    return ast.parse(path.read_text(encoding="utf-8"))


def _classes(tree: ast.Module) -> Dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}


def _methods(cls: ast.ClassDef) -> Set[str]:
    return {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _args(func: ast.FunctionDef):
    return [a.arg for a in func.args.args]


# ------------------------------------------------------------------------------ pretrain task


def test_runner_contract_is_met_by_our_expert():
    runner = (S3PRL / "pretrain" / "runner.py").read_text(encoding="utf-8")
    assert "importlib.import_module(module_path), 'UpstreamPretrainExpert'" in runner
    assert "module_path = f'pretrain.{self.args.upstream}.pretrain_expert'" in runner
    asserted = set(re.findall(r"assert hasattr\(upstream, '(\w+)'\)", runner))
    called = set(re.findall(r"self\.upstream\.(\w+)\(", runner))
    assert {"load_model", "add_state_to_save", "get_train_dataloader"} <= asserted
    ours = Path(registry.PRETRAIN_DIR) / "distiller" / "pretrain_expert.py"
    assert ours.is_file()  # S3PRL imports pretrain.distiller.pretrain_expert from this path
    module = importlib.import_module("s3prl_distill.pretrain.distiller.pretrain_expert")
    cls = module.UpstreamPretrainExpert
    for name in (asserted | called) - {"device"}:
        assert callable(getattr(cls, name, None)), f"our expert lacks {name}() that S3PRL's runner uses"
    init = _classes(_tree("pretrain/runner.py"))["Runner"]
    assert "self.config['pretrain_expert']['datarc']" in ast.unparse(init)  # datarc goes to us


def test_run_pretrain_imports_pretrain_runner_before_any_torch_load():
    """The import hook installs the weights_only allow-list when S3PRL's `pretrain` is imported."""
    tree = _tree("run_pretrain.py")
    top_imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert any(n.module == "pretrain.runner" for n in top_imports), \
        "run_pretrain.py no longer imports pretrain.runner at module level"
    source = ast.unparse(tree)
    assert "choices=os.listdir('pretrain/')" in source  # -u distiller needs pretrain/distiller/


def test_no_name_under_our_pretrain_collides_with_s3prl():
    assert registry.pretrain_collisions(str(S3PRL / "pretrain")) == {}
    ours = registry.pretrain_names(registry.PRETRAIN_DIR)
    same = set(ours) & set(S3PRL_0418_CHECKOUT_PRETRAIN)
    assert same == set(registry.REPLACED_S3PRL_TASKS), \
        f"names under s3prl_distill/pretrain equal to S3PRL's pretrain tasks: {sorted(same)}"
    for name in registry.REPLACED_S3PRL_TASKS:  # ours wins only over a namespace folder
        assert S3PRL_0418_CHECKOUT_PRETRAIN[name] == "namespace" and ours[name] == "package"


def test_collision_check_can_fail(tmp_path):
    (tmp_path / "runner.py").write_text("")
    (tmp_path / "distiller").mkdir()
    (tmp_path / "distiller" / "__init__.py").write_text("")
    (tmp_path / "config.py").write_text("")  # a name of ours S3PRL would shadow
    found = registry.pretrain_collisions(str(tmp_path))
    assert set(found) == {"distiller", "config"}


# ------------------------------------------------------------------------------ upstream side


def test_hub_and_upstream_base():
    assert (S3PRL / "hub.py").is_file()
    from s3prl.upstream.interfaces import UpstreamBase  # our UpstreamExpert's base

    assert callable(getattr(UpstreamBase, "forward", None))
    hub = importlib.import_module("s3prl.hub")
    assert callable(hub.hubert_local) and callable(hub.distiller_local)


def _recipe_downstreams() -> Set[str]:
    names = set()
    for script in (REPO / "downstream_recipes").glob("*/run.sh"):
        text = script.read_text(encoding="utf-8")
        names |= set(re.findall(r'train_then_test "[^"]+" (\w+) ', text))
        names |= set(re.findall(r" -d (\w+)", text))
    return names


def test_every_downstream_the_recipes_run_has_a_downstream_expert():
    tasks = _recipe_downstreams()
    assert {"ctc", "asr", "speech_commands", "fluent_commands", "voxceleb1", "sv_voxceleb1",
            "emotion", "quesst14_dtw", "diarization"} <= tasks
    for task in sorted(tasks):
        expert = _classes(_tree(f"downstream/{task}/expert.py")).get("DownstreamExpert")
        assert expert is not None and {"forward", "get_dataloader"} <= _methods(expert), task


# ------------------------------------------------------------------------------ superb add-ons


def test_ctc_task_imports_the_readers_we_fill_in():
    source = ast.unparse(_tree("downstream/ctc/data.py"))
    assert "from .corpus.libriphone import LibriPhoneDataset as Dataset" in source
    assert "from .corpus.snips import SnipsDataset as Dataset" in source
    assert "Dataset(kwargs['train'], tokenizer, bucket_size, **kwargs)" in source


def test_speaker_task_caches_we_redirect():
    sid = _tree("downstream/voxceleb1/dataset.py")
    assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "CACHE_PATH"
                                                 for t in n.targets) for n in sid.body)
    init = {n.name: n for n in _classes(sid)["SpeakerClassifiDataset"].body
            if isinstance(n, ast.FunctionDef)}["__init__"]
    assert _args(init)[:4] == ["self", "mode", "file_path", "meta_data"]
    assert "CACHE_PATH" in ast.unparse(init)
    asv = _classes(_tree("downstream/sv_voxceleb1/dataset.py"))["SpeakerVerifi_train"]
    init = {n.name: n for n in asv.body if isinstance(n, ast.FunctionDef)}["__init__"]
    assert _args(init)[:4] == ["self", "vad_config", "key_list", "file_path"]
    assert "os.path.dirname(__file__)" in ast.unparse(init)
    expert = _classes(_tree("downstream/sv_voxceleb1/expert.py"))["DownstreamExpert"]
    assert "forward" in _methods(expert)  # the CPU fix wraps it


def test_downstream_runner_names_run_downstream_patches():
    tree = _tree("downstream/runner.py")
    imported = {a.asname or a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    assert {"tqdm", "DDP"} <= imported
    assert "_get_optimizer" in _methods(_classes(tree)["Runner"])
    assert "main" in {n.name for n in _tree("run_downstream.py").body if isinstance(n, ast.FunctionDef)}


def test_weights_only_allows_every_s3prl_lr_schedule():
    optimizers = importlib.import_module("s3prl.optimizers")
    base = optimizers._LRSchedule
    schedules = {name for name, obj in vars(optimizers).items()
                 if isinstance(obj, type) and issubclass(obj, base) and obj is not base}
    assert schedules == set(weights_only.S3PRL_SCHEDULES)
