"""The experiment folder of a pretraining run: its lock, its checkpoints, where to resume from.

One place for every rule about ``EXPDIR``:

* **One run per folder.** :class:`ExperimentLock` holds an exclusive ``flock`` on
  ``EXPDIR/.lock`` for the whole run; a second run on the same folder stops at once with a line
  naming the process that holds it. The kernel drops the lock when its process dies (SIGKILL
  included), so a crashed run never leaves a stale lock behind. (Network file systems without
  ``flock`` support: the lock cannot be taken and the run says so.)
* **Checkpoints** are the regular files ``states-<step>.ckpt``; anything else of that name (a
  folder, a broken link) is ignored with a warning. They are written atomically and the newest
  ``max_keep`` are kept; ``best.ckpt`` (lowest dev loss) is never pruned; with
  ``runner.keep_best: K > 1`` the students of the K lowest dev evaluations are kept as
  ``best-<step>.ckpt`` (:func:`write_ranked_student`; a file leaves when its evaluation leaves the
  ranking, and only a regular file of that name is ever removed).
* **Resume.** :func:`resume_candidates` lists where a run may continue from, newest first
  (``-e FILE`` names exactly one; ``-e DIR`` or the experiment folder all of theirs), and
  :func:`choose_resume` takes the newest one that loads, holds a training state and passes the
  caller's check (e.g. tensor shapes against the model), falling back to older ones with a
  warning naming each file it skips and why. Each file is read once.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from s3prl_distill.checkpoint import CheckpointError
from s3prl_distill.errors import UserError
from s3prl_distill.io import atomic_save, safe_load

logger = logging.getLogger(__name__)

__all__ = ["CKPT_PATTERN", "BEST_NAME", "TRAINING_KEYS", "ExperimentBusyError", "ExperimentLock",
           "list_checkpoints", "resume_candidates", "read_training_checkpoint", "choose_resume",
           "write_checkpoint", "write_ranked_student", "remove_ranked_student", "cleanup_temp_files"]

CKPT_PATTERN = re.compile(r"^states-(\d+)\.ckpt$")
#: the checkpoint with the lowest dev loss so far (kept apart from the rotating ones)
BEST_NAME = "best.ckpt"
#: what a checkpoint must hold to resume a run
TRAINING_KEYS = ("runner_config", "model_config", "optimizer", "step", "data_state", "rng")
LOCK_NAME = ".lock"
#: a student among the ``keep_best`` lowest dev evaluations
RANKED_PATTERN = re.compile(r"^best-(\d+)\.ckpt$")


class ExperimentBusyError(UserError):
    """Another run holds the experiment folder."""


class ExperimentLock:
    """Exclusive lock of an experiment folder for the lifetime of one run (see the module doc).

    Use as a context manager or call :meth:`acquire` / :meth:`release`. The lock file holds the
    holder's pid, host, start time and command line, so the refusal can name it.
    """

    def __init__(self, expdir: str):
        self.expdir = os.fspath(expdir)
        self.path = os.path.join(self.expdir, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "ExperimentLock":
        import fcntl

        os.makedirs(self.expdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = ""
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ExperimentBusyError(
                    f"{self.expdir}: another run is using this experiment folder"
                    f"{' (' + holder + ')' if holder else ''}; wait for it to finish, or choose "
                    "another folder (-n NAME / -p DIR)") from None
            raise ExperimentBusyError(
                f"{self.expdir}: cannot lock the experiment folder ({err.strerror}); the file "
                "system may not support locks - use a local folder") from None
        note = (f"pid {os.getpid()} on {socket.gethostname()}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode("utf-8", "replace"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def list_checkpoints(expdir: str) -> List[Tuple[int, str]]:
    """``[(step, path)]`` of the regular files ``states-<step>.ckpt`` in ``expdir``, oldest first."""
    found = []
    try:
        names = os.listdir(expdir)
    except FileNotFoundError:
        return []
    for name in names:
        match = CKPT_PATTERN.match(name)
        if not match:
            continue
        path = os.path.join(expdir, name)
        if not os.path.isfile(path):
            logger.warning("ignoring %s: named like a checkpoint but not a regular file", path)
            continue
        found.append((int(match.group(1)), path))
    return sorted(found)


def resume_candidates(expdir: str, past_exp: Optional[str] = None) -> List[str]:
    """Checkpoints a run may resume from, newest first.

    Args:
        expdir: the run's experiment folder (its checkpoints, if ``past_exp`` is not given).
        past_exp: ``-e``: a checkpoint file (exactly that one) or a folder (its checkpoints).
    Raises:
        FileNotFoundError: ``past_exp`` names nothing, or a folder without checkpoints.
    """
    if past_exp:
        if os.path.isfile(past_exp):
            return [past_exp]
        if os.path.isdir(past_exp):
            found = [p for _, p in reversed(list_checkpoints(past_exp))]
            if not found:
                raise FileNotFoundError(f"-e {past_exp}: no states-*.ckpt file in the folder")
            return found
        raise FileNotFoundError(f"-e {past_exp}: no such checkpoint file or folder")
    return [p for _, p in reversed(list_checkpoints(expdir))]


def read_training_checkpoint(path: str) -> Dict[str, Any]:
    """Load ``path`` (weights only) and check that it holds a training state.

    Raises:
        CheckpointError: unreadable, or not a pretraining checkpoint of this runner (names the
            file and the missing key).
    """
    try:
        ckpt = safe_load(path)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a pretraining checkpoint (a {type(ckpt).__name__})")
    missing = [key for key in TRAINING_KEYS if key not in ckpt]
    if missing:
        hint = (" (an S3PRL checkpoint: resume it with S3PRL's own run_pretrain.py)"
                if "Optimizer" in ckpt and "Args" in ckpt else "")
        raise CheckpointError(f"{path}: not a pretraining checkpoint of this runner (missing "
                              f"{', '.join(repr(k) for k in missing)}){hint}")
    return ckpt


def choose_resume(candidates: Iterable[str], check: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None,
                  *, loaded: Optional[Tuple[str, Dict[str, Any]]] = None,
                  fallback: bool = True) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The newest candidate that loads, holds a training state and passes ``check``.

    Args:
        candidates: paths, newest first (:func:`resume_candidates`).
        check: ``check(ckpt) -> reason or None`` (e.g. shapes against the model being resumed).
        loaded: ``(path, ckpt)`` already read by the caller (not read again).
        fallback: try older candidates when one fails (False: the first failure raises).
    Returns:
        ``(path, ckpt)``, or None when there is no candidate.
    Raises:
        CheckpointError: no candidate is usable (each one's reason listed).
    """
    reasons = []
    for path in candidates:
        try:
            if loaded is not None and os.path.abspath(loaded[0]) == os.path.abspath(path):
                ckpt = loaded[1]
            else:
                ckpt = read_training_checkpoint(path)
            problem = check(ckpt) if check is not None else None
            if problem:
                raise CheckpointError(f"{path}: {problem}")
        except CheckpointError as err:
            if not fallback:
                raise
            logger.warning("ignoring unreadable checkpoint %s (trying the previous one)", err)
            reasons.append(str(err))
            continue
        return path, ckpt
    if reasons:
        raise CheckpointError("no checkpoint to resume from is usable: " + "; ".join(reasons))
    return None


def write_checkpoint(ckpt: Mapping[str, Any], expdir: str, step: int, max_keep: int) -> str:
    """Write ``states-<step>.ckpt`` atomically and prune to the newest ``max_keep``; returns its path."""
    path = os.path.join(expdir, f"states-{step}.ckpt")
    atomic_save(dict(ckpt), path)
    for _, old in list_checkpoints(expdir)[:-max_keep]:
        try:
            os.remove(old)
        except FileNotFoundError:
            pass
    return path


def ranked_student_path(expdir: str, step: int) -> str:
    return os.path.join(expdir, f"best-{int(step)}.ckpt")


def write_ranked_student(ckpt: Mapping[str, Any], expdir: str, step: int) -> str:
    """Write ``best-<step>.ckpt`` atomically (a student among the ``keep_best`` lowest)."""
    path = ranked_student_path(expdir, step)
    atomic_save(dict(ckpt), path)
    return path


def remove_ranked_student(expdir: str, step: int) -> None:
    """Remove ``best-<step>.ckpt`` if it is a regular file (a folder or link of that name is
    left alone, with a warning)."""
    path = ranked_student_path(expdir, step)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        logger.warning("%s is not a checkpoint this run wrote (not a regular file): left alone", path)
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def cleanup_temp_files(expdir: str) -> None:
    """Remove the temporary files an interrupted atomic save of this runner left behind."""
    try:
        names = os.listdir(expdir)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith((".tmp-states-", ".tmp-" + BEST_NAME, ".tmp-best-", ".tmp-config_")):
            try:
                os.remove(os.path.join(expdir, name))
            except OSError:
                pass
