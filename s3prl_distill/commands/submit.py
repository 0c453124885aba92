"""``s3prl-distill submit``: collect SUPERB test predictions into the leaderboard's ``predict.zip``.

Layout (as S3PRL's ``submit/submit.py`` and SUPERB's documentation define it)::

    predict/pr_public/predict.ark            <- <pr expdir>/test-hyp.ark
    predict/ks_public/predict.txt            <- <ks expdir>/test_predict.txt
    predict/ic_public/predict.csv            <- <ic expdir>/test_predict.csv
    predict/sid_public/predict.txt           <- <sid expdir>/test_predict.txt
    predict/er_fold<k>_public/predict.txt    <- <er fold k expdir>/test_fold<k>_predict.txt
    predict/asr_public/predict.ark           <- <asr expdir>/test-clean-noLM-hyp.ark
    predict/asr_lm_public/predict.ark        <- <asr expdir>/test-clean-LM-hyp.ark
    predict/qbe_public/benchmark.stdlist.xml <- <qbe expdir of the best dev layer, run on test>/...
    predict/sf_public/predict.ark            <- <sf expdir>/test-hyp.ark
    predict/sv_public/predict.txt            <- <asv expdir>/test_predict.txt (best checkpoint)
    predict/sd_public/<recording>.h5         <- <sd expdir>/scoring/predictions/*.h5

Every file is checked before it is packed (exists, not empty, the line format the scorer reads),
so a broken run fails here with the file and line named rather than on the leaderboard.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional
from s3prl_distill.errors import UserError

logger = logging.getLogger(__name__)

HELP = "collect SUPERB test predictions from experiment folders into the leaderboard's predict.zip"

__all__ = ["HELP", "add_arguments", "run", "package", "collect", "SubmitError", "TASKS"]


class SubmitError(UserError):
    """A prediction file is missing or not in the format the leaderboard scores."""


def _lines(path: Path) -> List[str]:
    lines = [line.rstrip("\r\n") for line in open(path, "r", encoding="utf-8")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise SubmitError(f"{path}: no predictions (empty file)")
    return lines


def _check_ark(path: Path) -> int:
    """``<utterance id> <tokens...>`` lines (a hypothesis may be empty: id only)."""
    lines = _lines(path)
    ids = set()
    for number, line in enumerate(lines, 1):
        uid = line.split(maxsplit=1)[0]
        if uid in ids:
            raise SubmitError(f"{path}:{number}: utterance id {uid!r} appears twice")
        ids.add(uid)
    return len(lines)


def _check_fields(count: int, sep: Optional[str] = None, float_field: Optional[int] = None
                  ) -> Callable[[Path], int]:
    def check(path: Path) -> int:
        lines = _lines(path)
        for number, line in enumerate(lines, 1):
            fields = line.split(sep)
            if len(fields) != count:
                raise SubmitError(
                    f"{path}:{number}: expected {count} {'comma-separated' if sep else ''} "
                    f"fields, got {len(fields)}: {line!r}")
            if float_field is not None:
                try:
                    float(fields[float_field])
                except ValueError:
                    raise SubmitError(f"{path}:{number}: field {float_field + 1} must be a "
                                      f"number, got {fields[float_field]!r}") from None
        return len(lines)

    return check


def _check_qbe(path: Path) -> int:
    from xml.etree import ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as err:
        raise SubmitError(f"{path}: not valid XML: {err}") from err
    if root.tag != "stdlist":
        raise SubmitError(f"{path}: root element must be <stdlist>, got <{root.tag}>")
    terms = root.findall("detected_termlist")
    if not terms:
        raise SubmitError(f"{path}: no <detected_termlist> (no query was scored)")
    for term in terms:
        for hit in term.findall("term"):
            if hit.get("decision") not in ("YES", "NO") or hit.get("score") is None:
                raise SubmitError(f"{path}: query {term.get('termid')}: every <term> needs a "
                                  f"score and decision YES|NO")
    return len(terms)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_sd(folder: Path) -> int:
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise SubmitError(f"{folder}: no <recording>.h5 predictions (run the SD test evaluation)")
    for path in files:
        with open(path, "rb") as handle:
            if handle.read(8) != _HDF5_SIGNATURE:
                raise SubmitError(f"{path}: not an HDF5 file")
    return len(files)


@dataclass(frozen=True)
class Task:
    """One leaderboard entry: where its predictions are in an expdir and where they go."""

    key: str            # our name (and the command-line option)
    public: str         # folder under predict/
    source: str         # file (or folder, for sd) inside the experiment folder
    target: str         # file name under predict/<public>/ ('' for a folder copy)
    check: Callable[[Path], int]


TASKS: Dict[str, Task] = {t.key: t for t in [
    Task("pr", "pr_public", "test-hyp.ark", "predict.ark", _check_ark),
    Task("ks", "ks_public", "test_predict.txt", "predict.txt", _check_fields(2)),
    Task("ic", "ic_public", "test_predict.csv", "predict.csv", _check_fields(4, sep=",")),
    Task("sid", "sid_public", "test_predict.txt", "predict.txt", _check_fields(2)),
    *[Task(f"er_fold{k}", f"er_fold{k}_public", f"test_fold{k}_predict.txt", "predict.txt",
           _check_fields(2)) for k in range(1, 6)],
    Task("asr", "asr_public", "test-clean-noLM-hyp.ark", "predict.ark", _check_ark),
    Task("asr_lm", "asr_lm_public", "test-clean-LM-hyp.ark", "predict.ark", _check_ark),
    Task("qbe", "qbe_public", "benchmark.stdlist.xml", "benchmark.stdlist.xml", _check_qbe),
    Task("sf", "sf_public", "test-hyp.ark", "predict.ark", _check_ark),
    Task("asv", "sv_public", "test_predict.txt", "predict.txt", _check_fields(2, float_field=1)),
    Task("sd", "sd_public", os.path.join("scoring", "predictions"), "", _check_sd),
]}

# S3PRL's submit.py option names, accepted as aliases
ALIASES = {"asr_no_lm": "asr", "asr_with_lm": "asr_lm", "sv": "asv"}


def collect(task: str, expdir: Path) -> Path:
    """The checked prediction file (or folder) of ``task`` in ``expdir``.

    Raises:
        SubmitError: unknown task, missing experiment folder or prediction file, bad format.
    """
    key = ALIASES.get(task, task)
    if key not in TASKS:
        raise SubmitError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    spec = TASKS[key]
    expdir = Path(expdir)
    if not expdir.is_dir():
        raise SubmitError(f"{expdir}: experiment folder of {key} not found")
    source = (expdir / spec.source).resolve()  # ASV's test_predict.txt may link the best one
    if spec.target and not source.is_file():
        raise SubmitError(f"{expdir / spec.source}: {key} prediction file not found "
                          f"(evaluate the task on its test split first)")
    if not spec.target and not source.is_dir():
        raise SubmitError(f"{expdir / spec.source}: {key} prediction folder not found")
    count = spec.check(source)
    logger.info("%s: %s (%d entries)", key, source, count)
    return source


def package(output_dir, expdirs: Mapping[str, Path]) -> List[str]:
    """Check and copy each task's predictions to ``<output_dir>/predict/`` and zip it.

    Args:
        output_dir: folder that receives ``predict/`` and ``predict.zip``.
        expdirs: task key (see :data:`TASKS`, or S3PRL's option names) -> experiment folder.

    Returns:
        The ``*_public`` folder names packed, in leaderboard order.
    """
    if not expdirs:
        raise SubmitError("no experiment folder given: nothing to submit")
    sources = {ALIASES.get(k, k): collect(k, Path(v)) for k, v in expdirs.items()}
    output_dir = Path(output_dir)
    predict = output_dir / "predict"
    if predict.exists():
        shutil.rmtree(predict)
    predict.mkdir(parents=True)
    packed = []
    for key, spec in TASKS.items():
        if key not in sources:
            continue
        target_dir = predict / spec.public
        if spec.target:
            target_dir.mkdir()
            shutil.copyfile(sources[key], target_dir / spec.target)
        else:
            shutil.copytree(sources[key], target_dir)
        packed.append(spec.public)
    folds = [k for k in sources if k.startswith("er_fold")]
    if folds and len(folds) < 5:
        logger.warning("ER has %d of 5 folds (%s): the leaderboard scores ER only with all five",
                       len(folds), ", ".join(sorted(folds)))
    archive = output_dir / "predict.zip"
    tmp = output_dir / ".predict.zip.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as handle:
        for folder, subdirs, files in sorted(os.walk(predict)):
            subdirs.sort()
            rel = Path(folder).relative_to(output_dir).as_posix()
            handle.write(folder, rel + "/")
            for name in sorted(files):
                handle.write(os.path.join(folder, name), f"{rel}/{name}")
    os.replace(tmp, archive)
    return packed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output_dir", "--output-dir", dest="output_dir", required=True,
                        help="folder for predict/ and predict.zip")
    for key in TASKS:
        names = [f"--{key}"] + [f"--{alias}" for alias, target in ALIASES.items() if target == key]
        parser.add_argument(*names, dest=key, metavar="EXPDIR",
                            help=f"experiment folder holding {TASKS[key].source}")


def run(args: argparse.Namespace) -> int:
    expdirs = {key: getattr(args, key) for key in TASKS if getattr(args, key, None)}
    try:
        packed = package(args.output_dir, expdirs)
    except SubmitError as err:
        logger.error("%s", err)
        return 1
    print(f"packed {len(packed)} task(s): {' '.join(packed)}")
    print(f"submit {Path(args.output_dir) / 'predict.zip'} to the SUPERB leaderboard")
    return 0
