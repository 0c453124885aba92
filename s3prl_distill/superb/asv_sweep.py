"""ASV checkpoint sweep: SUPERB has no VoxCeleb1 dev set for verification, so every saved
checkpoint is evaluated on the test trials and the best EER is reported (as S3PRL's
``sv_voxceleb1/test_expdir.sh`` does).

For each ``states-<step>.ckpt`` in the experiment folder: evaluate it into ``<expdir>/states-<step>/``
(skipped when that folder already holds a finished result), read the ``test-EER`` S3PRL prints,
write ``<expdir>/report.txt`` (best last) and point ``<expdir>/test_predict.txt`` at the best
checkpoint's predictions (the file ``s3prl-distill submit`` packs).

``python -m s3prl_distill.superb.asv_sweep EXPDIR [--voxceleb1 ROOT]``
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["SweepResult", "sweep", "default_runner", "checkpoints", "main"]

_EER = re.compile(r"test-EER:\s*([0-9.eE+-]+)")
_STEP = re.compile(r"^states-(\d+)\.ckpt$")


@dataclass(frozen=True)
class SweepResult:
    checkpoint: Path
    eer: float
    predictions: Path


def default_runner(args: Sequence[str], device: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run S3PRL's downstream runner (through our wrapper when it is installed).

    ``device``: ``cuda`` or ``cpu``; default ``cuda`` when torch sees a GPU, else ``cpu``.
    """
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = "s3prl_distill.run_downstream"  # S3PRL's runner with the plugin registered
    proc = subprocess.run([sys.executable, "-m", module, *args, "--device", device],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def checkpoints(expdir: Path) -> List[Path]:
    """``states-<step>.ckpt`` files of ``expdir``, by step."""
    found = [(int(m.group(1)), p) for p in Path(expdir).iterdir() if (m := _STEP.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_eer(text: str, where: Path) -> float:
    values = _EER.findall(text)
    if not values:
        raise RuntimeError(f"{where}: no 'test-EER' in the evaluation output")
    return float(values[-1])


def sweep(expdir, runner: Optional[Callable[[List[str]], object]] = None,
          voxceleb1: Optional[str] = None) -> SweepResult:
    """Evaluate every checkpoint of ``expdir`` on the test trials; return the best (lowest EER).

    Args:
        expdir: the ASV training experiment folder.
        runner: called with run_downstream's argument list; returns an object with ``stdout``
            (default: :func:`default_runner`).
        voxceleb1: VoxCeleb1 root, when it moved since training.
    """
    expdir = Path(expdir)
    runner = runner or default_runner
    ckpts = checkpoints(expdir)
    if not ckpts:
        raise FileNotFoundError(f"{expdir}: no states-<step>.ckpt checkpoints to evaluate")
    results = []
    for ckpt in ckpts:
        out = expdir / ckpt.stem
        log = out / "log.txt"
        predictions = out / "test_predict.txt"
        if log.is_file() and predictions.is_file() and _EER.search(log.read_text()):
            eer = _read_eer(log.read_text(), log)
        else:
            out.mkdir(exist_ok=True)
            override = f"args.expdir={out}"
            if voxceleb1:
                override += f",,config.downstream_expert.datarc.file_path={voxceleb1}"
            proc = runner(["-m", "evaluate", "-e", str(ckpt), "-t", "test", "-o", override])
            text = getattr(proc, "stdout", "") or ""
            log.write_text(text)
            eer = _read_eer(text, ckpt)
            if not predictions.is_file():
                raise RuntimeError(f"{predictions}: the evaluation wrote no predictions")
        logger.info("%s: test EER %.4f", ckpt.name, eer)
        results.append(SweepResult(ckpt, eer, predictions))
    ranked = sorted(results, key=lambda r: (-r.eer, -ckpts.index(r.checkpoint)))
    (expdir / "report.txt").write_text(
        "".join(f"{r.checkpoint.name} {r.eer:.6f}\n" for r in ranked))
    best = ranked[-1]
    target = expdir / "test_predict.txt"
    if target.exists() or target.is_symlink():
        target.unlink()
    shutil.copyfile(best.predictions, target)
    (expdir / "best_checkpoint.txt").write_text(f"{best.checkpoint.name} {best.eer:.6f}\n")
    return best


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3prl_distill.superb.asv_sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("expdir")
    parser.add_argument("--voxceleb1", help="VoxCeleb1 root, if it moved since training")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda if available")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    best = sweep(args.expdir, runner=lambda a: default_runner(a, args.device),
                 voxceleb1=args.voxceleb1)
    logger.info("%d checkpoints evaluated; best %s EER %.4f; predictions in %s",
                len(checkpoints(Path(args.expdir))), best.checkpoint.name, best.eer,
                Path(args.expdir) / "test_predict.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
