"""``python -m s3prl_distill.run_pretrain``: S3PRL's pretraining command, run by our trainer.

Arguments are S3PRL's ``run_pretrain.py`` arguments, unchanged::

    python -m s3prl_distill.run_pretrain -u distiller -g upstream_configs/distilhubert.yaml \\
        -n distilhubert [-c runner.yaml] [-p DIR] [-a] [-e CKPT] [-o OVERRIDE] [--seed N] \\
        [--device cpu|cuda] [--multi_gpu]
    torchrun --nproc_per_node=4 -m s3prl_distill.run_pretrain ...    # DistributedDataParallel

Differences from S3PRL's runner (see :mod:`s3prl_distill.pretrain.trainer`):

* rerunning a command whose experiment folder already holds checkpoints always resumes from the
  newest complete one (``-a`` is accepted and implied); ``-e CKPT|DIR`` resumes from elsewhere;
* ``-o`` values are parsed as YAML (``config.optimizer.lr=1e-3,,args.seed=3``), never ``eval``-ed;
* ``--device`` defaults to ``cuda`` when available, else ``cpu``;
* ``--multi_gpu`` (DataParallel) is accepted; use ``torchrun`` for data parallelism.

In-process use (e.g. a demo): ``path = run(parse_args([...]))`` or
``path = distil(model_yaml_or_data, runner_yaml_or_data, expdir)`` returns the final checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

import s3prl_distill  # noqa: F401  (torchaudio shim first)
from s3prl_distill.config import ConfigError, load_yaml
from s3prl_distill.io import atomic_write_text, safe_load

logger = logging.getLogger("s3prl_distill.run_pretrain")

__all__ = ["parse_args", "run", "distil", "main", "available_upstreams", "apply_override", "DEFAULT_RUNNER_CONFIG"]

PRETRAIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain")
DEFAULT_RUNNER_CONFIG = os.path.join(PRETRAIN_DIR, "configs", "distilhubert.yaml")


def available_upstreams() -> List[str]:
    """Our pretrain tasks: folders of ``s3prl_distill/pretrain`` holding a ``pretrain_expert.py``."""
    return sorted(
        name for name in os.listdir(PRETRAIN_DIR)
        if os.path.isfile(os.path.join(PRETRAIN_DIR, name, "pretrain_expert.py"))
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3prl_distill.run_pretrain",
        description="Distil a speech SSL teacher into a student (S3PRL's run_pretrain arguments).",
    )
    parser.add_argument("-e", "--past_exp", metavar="{CKPT_PATH,CKPT_DIR}",
                        help="resume from a checkpoint (or the newest in a folder)")
    parser.add_argument("-o", "--override",
                        help="override args/config, e.g. \"config.optimizer.lr=1.0e-3,,args.seed=2\"")
    parser.add_argument("-c", "--config", metavar="CONFIG_PATH",
                        help=f"runner YAML (default: {os.path.relpath(DEFAULT_RUNNER_CONFIG)})")
    parser.add_argument("-u", "--upstream", choices=available_upstreams(), default="distiller")
    parser.add_argument("-g", "--upstream_config", metavar="CONFIG_PATH",
                        help="model YAML (student / teacher / loss / init)")
    parser.add_argument("-n", "--expname", help="save the experiment at result/pretrain/EXPNAME")
    parser.add_argument("-p", "--expdir", help="save the experiment at EXPDIR")
    parser.add_argument("-a", "--auto_resume", action="store_true",
                        help="resume if EXPDIR holds checkpoints (always done; kept for S3PRL)")
    parser.add_argument("--seed", default=1337, type=int)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--multi_gpu", action="store_true", help="S3PRL's DataParallel switch")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(string: str, args: argparse.Namespace, config: Dict[str, Any]) -> None:
    """Apply S3PRL-style overrides ``key=value,,key=value`` (``args.X`` or ``config.a.b``).

    Values are YAML scalars/lists (``1e-3``, ``'AdamW'``, ``[a, b]``); nothing is evaluated.
    """
    for option in string.split(",,"):
        option = option.strip()
        if not option:
            continue
        if "=" not in option:
            raise ConfigError(f"-o {string!r}: expected key=value, got {option!r}")
        key, text = (part.strip() for part in option.split("=", 1))
        value = _parse_value(text)
        first, *rest = key.split(".")
        if first == "args" and len(rest) == 1:
            setattr(args, rest[0], value)
        elif first == "config" and rest:
            target = config
            for name in rest[:-1]:
                node = target.setdefault(name, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"-o {key}: {name} is not a mapping in the runner config")
                target = node
            target[rest[-1]] = value
        else:
            raise ConfigError(f"-o {key}: keys start with 'args.' (one name) or 'config.'")
        logger.info("override %s = %r", key, value)


def _resolve_resume(args: argparse.Namespace) -> Optional[str]:
    from s3prl_distill.pretrain.trainer import latest_checkpoint

    if args.past_exp:
        if os.path.isdir(args.past_exp):
            path = latest_checkpoint(args.past_exp)
            if path is None:
                raise FileNotFoundError(f"-e {args.past_exp}: no readable states-*.ckpt in the folder")
            return path
        if not os.path.isfile(args.past_exp):
            raise FileNotFoundError(f"-e {args.past_exp}: no such checkpoint")
        return args.past_exp
    if os.path.isdir(args.expdir):
        return latest_checkpoint(args.expdir)
    return None


def _cleanup_temp_files(expdir: str) -> None:
    """Remove temporary files an interrupted atomic save left behind."""
    for name in os.listdir(expdir):
        if name.startswith(".tmp-states-"):
            try:
                os.remove(os.path.join(expdir, name))
            except OSError:
                pass


def prepare(args: argparse.Namespace) -> Tuple[Dict[str, Any], Any, Optional[Dict[str, Any]], str]:
    """Resolve expdir, resume point, runner config and model config.

    Returns:
        (runner config data, model config (path or data), resume checkpoint or None, config name).
    """
    if args.expdir is None:
        if not args.expname:
            raise ConfigError("give -n EXPNAME or -p EXPDIR")
        args.expdir = os.path.join("result", "pretrain", args.expname)
    resume_path = _resolve_resume(args)
    if resume_path:
        logger.info("resuming from %s", resume_path)
        ckpt = safe_load(resume_path)
        for key in ("runner_config", "model_config", "optimizer", "step", "data_state", "rng"):
            if key not in ckpt:
                raise ConfigError(f"{resume_path}: not a pretraining checkpoint of this runner "
                                  f"(missing '{key}')")
        config, model_config, where = dict(ckpt["runner_config"]), dict(ckpt["model_config"]), resume_path
        if args.config or args.upstream_config:
            logger.info("resuming: the runner and model configs stored in %s are used (-c/-g are "
                        "only read for a new experiment; change settings with -o)", resume_path)
    else:
        ckpt = None
        if not args.upstream_config:
            raise ConfigError("-g UPSTREAM_CONFIG (the model YAML) is required for a new experiment")
        config_path = args.config or DEFAULT_RUNNER_CONFIG
        config, model_config, where = load_yaml(config_path), args.upstream_config, config_path
        load_yaml(model_config)  # fail early, naming the file
    if args.override and str(args.override).lower() != "none":
        apply_override(args.override, args, config)
    return config, model_config, ckpt, where


def run(args: argparse.Namespace) -> str:
    """Train as ``args`` say (see :func:`parse_args`); returns the final checkpoint path."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.multi_gpu:
        logger.warning("--multi_gpu (DataParallel) is not used by this runner; launch with "
                       "torchrun --nproc_per_node=N for DistributedDataParallel")
    config, model_config, ckpt, where = prepare(args)
    return _train(args, config, model_config, ckpt, where)


def _train(args: argparse.Namespace, config: Dict[str, Any], model_config: Any,
           ckpt: Optional[Dict[str, Any]], where: str) -> str:
    from s3prl_distill.pretrain.trainer import Trainer, init_distributed

    ctx = init_distributed(args.device)
    try:
        if ctx.is_main:
            os.makedirs(args.expdir, exist_ok=True)
            _cleanup_temp_files(args.expdir)
            atomic_write_text(yaml.safe_dump(config, sort_keys=False),
                              os.path.join(args.expdir, "config_runner.yaml"))
            model_data = model_config if isinstance(model_config, dict) else load_yaml(model_config)
            atomic_write_text(yaml.safe_dump(model_data, sort_keys=False),
                              os.path.join(args.expdir, "config_model.yaml"))
        module = importlib.import_module(f"s3prl_distill.pretrain.{args.upstream}.pretrain_expert")
        trainer = Trainer(
            module.UpstreamPretrainExpert, config, model_config, args.expdir, device=args.device,
            seed=args.seed, resume=ckpt, ctx=ctx, config_where=where, args=vars(args),
        )
        try:
            return trainer.train()
        finally:
            trainer.close()
    finally:
        ctx.close()


def distil(model_config: Any, runner_config: Any, expdir: str, *, seed: int = 1337,
           device: Optional[str] = None, override: Optional[str] = None,
           upstream: str = "distiller") -> str:
    """In-process pretraining with configs given as paths or as already-loaded data.

    Args:
        model_config: model YAML path, or its data (``student`` / ``teacher`` / ``loss`` / ``init``).
        runner_config: runner YAML path, or its data (``runner`` / ``optimizer`` / ...).
        expdir: experiment folder; if it holds checkpoints the run resumes from the newest.
        seed, device, override, upstream: as ``--seed``, ``--device``, ``-o``, ``-u``.

    Returns:
        Path of the final checkpoint (``expdir/states-<total>.ckpt``); export the student with
        :func:`s3prl_distill.commands.export.export_student` or load it with
        :func:`s3prl_distill.checkpoint.load_student`.
    """
    import torch

    args = argparse.Namespace(
        past_exp=None, override=override, config=None, upstream=upstream,
        upstream_config=None, expname=None, expdir=os.fspath(expdir), auto_resume=True,
        seed=seed, device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
        multi_gpu=False,
    )
    resume_path = _resolve_resume(args)
    if resume_path:
        config, model, ckpt, where = prepare(args)
    else:
        ckpt = None
        if isinstance(runner_config, Mapping):
            config, where = dict(runner_config), "runner config"
        else:
            config, where = load_yaml(runner_config), os.fspath(runner_config)
        model = dict(model_config) if isinstance(model_config, Mapping) else os.fspath(model_config)
        if not isinstance(model, dict):
            load_yaml(model)
        if override and override.lower() != "none":
            apply_override(override, args, config)
    return _train(args, config, model, ckpt, where)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=os.environ.get("S3PRL_DISTILL_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        path = run(args)
    except (ConfigError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
