"""Find things in an S3PRL downstream experiment folder (used by the recipes' run scripts).

``python -m s3prl_distill.superb.expdir best-dev EXPDIR`` prints the checkpoint to evaluate;
``python -m s3prl_distill.superb.expdir qbe-mtwv EXPDIR`` prints the maxTWV that QUESST's scorer
(``scoring/score-TWV-Cnxe.sh EXPDIR groundtruth_quesst14_dev -10``) wrote to ``EXPDIR/score.out``.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger(__name__)

__all__ = ["best_dev_checkpoint", "read_mtwv", "main"]

# S3PRL's names for the best-on-dev checkpoint: dev-best.ckpt (most tasks),
# dev-clean-best.ckpt (ASR), best-states-dev.ckpt (SD)
_BEST = re.compile(r"^(?:.*dev.*best.*|best.*dev.*)\.ckpt$")
_STATES = re.compile(r"^states-(\d+)\.ckpt$")
_MTWV = re.compile(r"maxTWV:\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)")


def read_mtwv(expdir) -> float:
    """maxTWV from QUESST's ``score.out`` in ``expdir`` (``... maxTWV: 0.0123 Threshold ...``).

    Raises:
        FileNotFoundError: no ``score.out`` (the scorer did not run there).
        ValueError: ``score.out`` holds no maxTWV.
    """
    path = Path(expdir) / "score.out"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run QUESST's score-TWV-Cnxe.sh on {expdir})")
    found = _MTWV.findall(path.read_text(errors="replace"))
    if not found:
        raise ValueError(f"{path}: no 'maxTWV: <value>' in the scorer's output")
    return float(found[-1])


def best_dev_checkpoint(expdir) -> Path:
    """The best-on-dev checkpoint of ``expdir``; the latest ``states-<step>.ckpt`` if none was
    saved (a dev metric that never improved on its initial value), with a warning.

    Raises:
        FileNotFoundError: the folder holds no checkpoint at all.
    """
    expdir = Path(expdir)
    if not expdir.is_dir():
        raise FileNotFoundError(f"{expdir}: experiment folder not found")
    best = sorted((p for p in expdir.iterdir() if _BEST.match(p.name)),
                  key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    states = sorted(((int(m.group(1)), p) for p in expdir.iterdir()
                     if (m := _STATES.match(p.name))))
    if not states:
        raise FileNotFoundError(f"{expdir}: no checkpoint (*dev*best*.ckpt or states-*.ckpt)")
    logger.warning("%s: no best-on-dev checkpoint (the dev metric never improved); using %s",
                   expdir, states[-1][1].name)
    return states[-1][1]


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] not in ("best-dev", "qbe-mtwv"):
        print("usage: python -m s3prl_distill.superb.expdir best-dev|qbe-mtwv EXPDIR",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(best_dev_checkpoint(argv[1]) if argv[0] == "best-dev" else read_mtwv(argv[1]))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
