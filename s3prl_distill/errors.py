"""The one base class of errors a user can fix (bad file, key, value), and how commands show them.

Every error that means "the input is wrong, here is what to do" derives from :class:`UserError`
(``ConfigError``, ``DataError``, ``TeacherError``, ``CheckpointError``, ...). Commands let them
propagate; :func:`run_command` turns them into one short line on stderr and exit code 2. The
traceback is shown only when the user asks for it (``--debug`` or ``S3PRL_DISTILL_DEBUG=1``).

Operating-system errors a user can act on are treated the same way: a missing file, a permission
problem, a full disk (the ``No space left on device`` is named, not buried in a chained error).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Callable, Optional

__all__ = ["UserError", "DEBUG_ENV", "debug_requested", "user_message", "run_command"]

#: environment variable that asks every command for full tracebacks
DEBUG_ENV = "S3PRL_DISTILL_DEBUG"

logger = logging.getLogger(__name__)


class UserError(ValueError):
    """Bad input the user can fix; the message names the file, key or value and what to do."""


_OS_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EISDIR,
              errno.ENOTDIR, errno.EROFS, errno.EEXIST, errno.ENAMETOOLONG}


def debug_requested(flag: bool = False) -> bool:
    """Whether tracebacks were asked for (``flag`` from ``--debug``, or the environment)."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def _root_os_error(err: BaseException) -> Optional[OSError]:
    """The first OSError with a user-actionable errno in ``err``'s cause/context chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _OS_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def user_message(err: BaseException) -> Optional[str]:
    """The one line to show for ``err``, or None when it is a bug (show the traceback)."""
    if isinstance(err, UserError):
        return str(err)
    os_err = _root_os_error(err)
    if os_err is not None:
        where = f"{os_err.filename}: " if os_err.filename else ""
        text = os_err.strerror or str(os_err)
        if os_err.errno in (errno.ENOSPC, errno.EDQUOT):
            text += " (free disk space or write elsewhere, then rerun: runs resume)"
        return f"{where}{text}"
    return None


def run_command(func: Callable[[], int], name: str, debug: bool = False) -> int:
    """Run ``func`` and return its exit code; user errors become one line and exit code 2."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"{name}: interrupted\n")
        return 130
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
        message = user_message(err)
        if message is None or debug_requested(debug):
            raise
        sys.stderr.write(f"{name}: error: {message}\n")
        return 2
