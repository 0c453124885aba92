"""``python -m s3prl_distill.run_pretrain``: S3PRL's pretraining command, run by our trainer.

Arguments are S3PRL's ``run_pretrain.py`` arguments, unchanged (plus ``--debug``)::

    python -m s3prl_distill.run_pretrain -u distiller -g upstream_configs/distilhubert.yaml \\
        -n distilhubert [-c runner.yaml] [-p DIR] [-a] [-e CKPT] [-o OVERRIDE] [--seed N] \\
        [--device cpu|cuda] [--multi_gpu]
    torchrun --nproc_per_node=4 -m s3prl_distill.run_pretrain ...    # DistributedDataParallel

What a run does, in order (each step in one place):

1. ``args.*`` overrides of ``-o`` are applied first (so ``-o args.expdir=X`` decides where the run
   lives and resumes from); unknown ``args`` names and values of the wrong type stop the run.
2. The experiment folder is locked (one run per folder,
   :class:`~s3prl_distill.pretrain.checkpoints.ExperimentLock`).
3. Resume: ``-e CKPT|DIR``, or the newest complete checkpoint in the folder (``-a`` is accepted
   and implied); its stored runner and model configs and its seed are used (a different
   ``--seed`` given explicitly stops the run).
4. ``config.*`` overrides are applied; the runner and model configs are parsed once into their
   dataclasses (an error caused by an override names the override).
5. :func:`~s3prl_distill.pretrain.build.build_run` builds the task and data;
   :class:`~s3prl_distill.pretrain.trainer.Trainer` trains (resuming from the newest checkpoint
   that fits the model, older ones as fallback).

``-o`` values are YAML scalars/lists (``config.optimizer.lr=1e-3,,args.seed=3``), never
``eval``-ed. ``--device`` defaults to ``cuda`` when available, else ``cpu``. ``--multi_gpu``
(DataParallel) is accepted; use ``torchrun`` for data parallelism.

In-process use (e.g. a demo): ``path = run(parse_args([...]))`` or
``path = distil(model_yaml_or_data, runner_yaml_or_data, expdir)`` returns the final checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import yaml

import s3prl_distill  # noqa: F401  (torchaudio shim first)
from s3prl_distill.config import ConfigError, load_yaml
from s3prl_distill.errors import run_command
from s3prl_distill.io import atomic_write_text

logger = logging.getLogger("s3prl_distill.run_pretrain")

__all__ = ["parse_args", "prepare", "prepare_in_process", "training_session", "run", "distil",
           "main", "available_upstreams", "apply_override", "DEFAULT_RUNNER_CONFIG", "DEFAULT_SEED"]

PRETRAIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain")
DEFAULT_RUNNER_CONFIG = os.path.join(PRETRAIN_DIR, "configs", "distilhubert.yaml")
#: S3PRL's run_pretrain.py default seed
DEFAULT_SEED = 1337


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
    parser.add_argument("--seed", default=None, type=int,
                        help=f"random seed (default {DEFAULT_SEED}; a resumed run keeps its own)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--multi_gpu", action="store_true", help="S3PRL's DataParallel switch")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (or set S3PRL_DISTILL_DEBUG=1)")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# ------------------------------------------------------------------------------------------------
# -o overrides
# ------------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _split_override(string: str) -> List[Tuple[str, str, Any]]:
    """``key=value,,key=value`` -> [(key, text, value)], values parsed as YAML."""
    out = []
    for option in string.split(",,"):
        option = option.strip()
        if not option:
            continue
        if "=" not in option:
            raise ConfigError(f"-o {string!r}: expected key=value, got {option!r}")
        key, text = (part.strip() for part in option.split("=", 1))
        out.append((key, text, _parse_value(text)))
    return out


#: the ``args`` names ``-o args.NAME=...`` may set, with their type checks
_ARG_TYPES: Dict[str, Any] = {
    "past_exp": str, "config": str, "upstream": str, "upstream_config": str, "expname": str,
    "expdir": str, "auto_resume": bool, "seed": int, "device": str, "multi_gpu": bool,
    "debug": bool,
}


def _check_arg(key: str, value: Any, text: str) -> Any:
    if key not in _ARG_TYPES:
        raise ConfigError(f"-o args.{key}={text}: unknown argument '{key}'; known: "
                          f"{', '.join(sorted(_ARG_TYPES))}")
    expected = _ARG_TYPES[key]
    if value is None and expected is str:
        return None
    if expected is str:
        return str(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"-o args.{key}={text}: expected {'an integer' if expected is int else 'true or false'}")
    return value


def apply_override(string: str, args: argparse.Namespace, config: Optional[Dict[str, Any]] = None,
                   *, only: Optional[str] = None) -> List[str]:
    """Apply S3PRL-style overrides ``key=value,,key=value`` (``args.X`` or ``config.a.b``).

    Args:
        only: ``"args"`` or ``"config"`` applies just those keys (the run applies ``args`` ones
            before it looks for its experiment folder, ``config`` ones after it read the configs).
    Returns:
        The applied ``config.*`` keys (``a.b``).
    Raises:
        ConfigError: a malformed option, an unknown ``args`` name or a value of the wrong type.
    """
    applied = []
    for key, text, value in _split_override(string):
        first, *rest = key.split(".")
        if first == "args" and len(rest) == 1:
            if only in (None, "args"):
                setattr(args, rest[0], _check_arg(rest[0], value, text))
                logger.info("override %s = %r", key, value)
        elif first == "config" and rest:
            if only in (None, "config"):
                if config is None:
                    raise ConfigError(f"-o {key}: no config to override")
                target = config
                for name in rest[:-1]:
                    node = target.setdefault(name, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"-o {key}={text}: '{name}' is not a section of the runner config")
                    target = node
                target[rest[-1]] = value
                applied.append(".".join(rest))
                logger.info("override %s = %r", key, value)
        else:
            raise ConfigError(f"-o {key}: keys start with 'args.' (one name) or 'config.'")
    return applied


def _check_device(device: str) -> str:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: only cpu and cuda are supported")
    return device


# ------------------------------------------------------------------------------------------------
# preparing a run
# ------------------------------------------------------------------------------------------------
class Prepared:
    """Everything :func:`run` decided before training (configs parsed once)."""

    def __init__(self, args, runner_data, model_data, runner_cfg, model_cfg, where, model_where,
                 resume, candidates, seed):
        self.args = args
        self.runner_data: Dict[str, Any] = runner_data
        self.model_data: Dict[str, Any] = model_data
        self.runner_cfg = runner_cfg
        self.model_cfg = model_cfg
        self.where: str = where
        self.model_where: str = model_where
        self.resume: Optional[Tuple[str, Dict[str, Any]]] = resume
        self.candidates: List[str] = candidates
        self.seed: int = seed


def _parse_runner(data: Mapping[str, Any], where: str, base: Optional[Mapping[str, Any]],
                  applied: List[str], override: Optional[str]):
    """PretrainConfig of ``data``; an error that only the overrides cause names them."""
    from s3prl_distill.pretrain.config import PretrainConfig

    try:
        return PretrainConfig.from_data(data, where=where)
    except ConfigError as err:
        if applied and base is not None:
            try:
                PretrainConfig.from_data(base, where=where)
            except ConfigError:
                raise err from None
            raise ConfigError(f"-o {override}: {str(err).replace(where + ': ', '', 1)} "
                              f"(overriding {', '.join('config.' + k for k in applied)})") from None
        raise


def prepare(args: argparse.Namespace, runner_data: Optional[Mapping[str, Any]] = None,
            model_data: Optional[Mapping[str, Any]] = None) -> Prepared:
    """Decide the experiment folder, the resume point, the configs and the seed (steps 1, 3, 4).

    Args:
        runner_data, model_data: configs given as data (in-process use) instead of ``-c``/``-g``.
    """
    from s3prl_distill.pretrain.checkpoints import choose_resume, resume_candidates
    from s3prl_distill.pretrain.expert import read_model_config

    override = args.override if args.override and str(args.override).lower() != "none" else None
    if override:
        apply_override(override, args, only="args")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    _check_device(args.device)
    if args.expdir is None:
        if not args.expname:
            raise ConfigError("give -n EXPNAME or -p EXPDIR")
        args.expdir = os.path.join("result", "pretrain", args.expname)
    if os.path.exists(args.expdir) and not os.path.isdir(args.expdir):
        raise ConfigError(f"-p {args.expdir}: exists and is not a folder")

    candidates = resume_candidates(args.expdir, args.past_exp)
    resume = choose_resume(candidates, fallback=not (args.past_exp and os.path.isfile(args.past_exp)))
    if resume is not None:
        path, ckpt = resume
        logger.info("resuming from %s", path)
        base_runner, model, where = dict(ckpt["runner_config"]), dict(ckpt["model_config"]), path
        if args.config or args.upstream_config:
            logger.info("resuming: the runner and model configs stored in %s are used (-c/-g are "
                        "only read for a new experiment; change settings with -o)", path)
        saved_seed = ckpt.get("data_state", {}).get("seed")
        if saved_seed is not None and args.seed is not None and int(args.seed) != int(saved_seed):
            raise ConfigError(f"--seed {args.seed}: {path} was trained with seed {saved_seed}; "
                              f"resume without --seed (or with --seed {saved_seed}), or start a "
                              "new experiment folder")
        seed = int(saved_seed) if saved_seed is not None else (
            args.seed if args.seed is not None else DEFAULT_SEED)
    else:
        if runner_data is not None:
            base_runner, where = copy.deepcopy(dict(runner_data)), "runner config"
        else:
            where = args.config or DEFAULT_RUNNER_CONFIG
            base_runner = load_yaml(where)
        if model_data is not None:
            model = copy.deepcopy(dict(model_data))
        else:
            if not args.upstream_config:
                raise ConfigError("-g UPSTREAM_CONFIG (the model YAML) is required for a new experiment")
            model = args.upstream_config
        seed = args.seed if args.seed is not None else DEFAULT_SEED
    runner = copy.deepcopy(base_runner)
    applied = apply_override(override, args, runner, only="config") if override else []
    runner_cfg = _parse_runner(runner, where, base_runner, applied, override)
    model, model_cfg, model_where = read_model_config(model)
    args.seed = seed
    return Prepared(args, runner, model, runner_cfg, model_cfg, where, model_where, resume,
                    candidates, seed)


def _write_configs(prep: Prepared) -> None:
    """The configs of the run as YAML beside its checkpoints (rank 0)."""
    expdir = prep.args.expdir
    atomic_write_text(yaml.safe_dump(prep.runner_data, sort_keys=False),
                      os.path.join(expdir, "config_runner.yaml"))
    atomic_write_text(yaml.safe_dump(prep.model_data, sort_keys=False),
                      os.path.join(expdir, "config_model.yaml"))


@contextlib.contextmanager
def training_session(prep: Prepared, tensorboard: bool = True) -> Iterator[Any]:
    """The trainer of a prepared run, ready to ``train()`` (step 2 and 5 of the module doc).

    Joins the process group, locks and writes the experiment folder (rank 0), seeds, builds the
    run and the trainer and resumes it; everything is released on exit.
    """
    import torch

    from s3prl_distill.pretrain.build import build_run
    from s3prl_distill.pretrain.checkpoints import ExperimentLock, choose_resume, cleanup_temp_files
    from s3prl_distill.pretrain.distributed import init_distributed
    from s3prl_distill.pretrain.rng import seed_everything
    from s3prl_distill.pretrain.trainer import Trainer

    args = prep.args
    ctx = init_distributed(args.device)
    lock = None
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and ctx.distributed and device.index is None:
            device = torch.device("cuda", ctx.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if ctx.is_main:
            lock = ExperimentLock(args.expdir).acquire()
            cleanup_temp_files(args.expdir)
            _write_configs(prep)
        seed_everything(prep.seed)  # the model init, as S3PRL's run_pretrain.py seeds it
        data = prep.runner_cfg.pretrain_expert.datarc
        run = build_run(prep.model_cfg, data, device=device, seed=prep.seed, rank=ctx.rank,
                        world_size=ctx.world_size, where=prep.model_where)
        trainer = Trainer(run, prep.runner_cfg, args.expdir, ctx=ctx, seed=prep.seed,
                          runner_data=prep.runner_data, model_data=prep.model_data, args=vars(args),
                          tensorboard=tensorboard)
        try:
            if prep.resume is not None:
                explicit_file = bool(args.past_exp and os.path.isfile(args.past_exp))
                path, ckpt = choose_resume(prep.candidates, trainer.resume_problem,
                                           loaded=prep.resume, fallback=not explicit_file)
                trainer.load_state(ckpt, where=path)
            yield trainer
        finally:
            trainer.close()
    finally:
        if lock is not None:
            lock.release()
        ctx.close()


def _train(prep: Prepared) -> str:
    with training_session(prep) as trainer:
        return trainer.train()


def run(args: argparse.Namespace) -> str:
    """Train as ``args`` say (see :func:`parse_args`); returns the final checkpoint path."""
    if args.multi_gpu:
        logger.warning("--multi_gpu (DataParallel) is not used by this runner; launch with "
                       "torchrun --nproc_per_node=N for DistributedDataParallel")
    return _train(prepare(args))


def prepare_in_process(model_config: Any, runner_config: Any, expdir: str, *,
                       seed: Optional[int] = None, device: Optional[str] = None,
                       override: Optional[str] = None, upstream: str = "distiller") -> Prepared:
    """:func:`prepare` for configs given as paths or as already-loaded data (see :func:`distil`)."""
    args = argparse.Namespace(
        past_exp=None, override=override, config=None, upstream=upstream,
        upstream_config=None, expname=None, expdir=os.fspath(expdir), auto_resume=True,
        seed=seed, device=device, multi_gpu=False, debug=False,
    )
    runner_data = runner_config if isinstance(runner_config, Mapping) else None
    model_data = model_config if isinstance(model_config, Mapping) else None
    if runner_data is None:
        args.config = os.fspath(runner_config)
    if model_data is None:
        args.upstream_config = os.fspath(model_config)
    return prepare(args, runner_data=runner_data, model_data=model_data)


def distil(model_config: Any, runner_config: Any, expdir: str, *, seed: Optional[int] = None,
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
    return _train(prepare_in_process(model_config, runner_config, expdir, seed=seed, device=device,
                                     override=override, upstream=upstream))


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=os.environ.get("S3PRL_DISTILL_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    args = parse_args(argv)

    def go() -> int:
        path = run(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(path)
        return 0

    return run_command(go, "run_pretrain", args.debug)


if __name__ == "__main__":
    sys.exit(main())
