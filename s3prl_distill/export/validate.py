"""Check a SUPERB hidden-set submission folder against the challenge's upstream rules.

Rules (the submission template ``superb/superb-submission`` and its upstream specification, and
what S3PRL's featurizer enforces):

1. The folder holds ``expert.py``, ``model.pt`` and ``requirements.txt``.
2. ``requirements.txt`` lists installable requirements (one per line; comments allowed) and does
   not need s3prl-distill (the committee installs torch, then these).
3. ``UpstreamExpert(ckpt="./model.pt")`` builds, run from inside the folder, in a separate
   process (nothing of the caller's interpreter state leaks in).
4. ``forward(wavs)`` on a list of 16 kHz waveforms of different lengths returns a dict whose
   ``hidden_states`` is a non-empty list of float tensors ``[B, T, D]`` of one shape, B = len(wavs),
   finite; twice the same input gives the same output (eval mode, no dropout).
5. ``get_downsample_rates("hidden_states")`` returns a positive int, and T is within 5 frames of
   ``round(max_len / rate)`` (S3PRL's featurizer rejects more; it also probes 1 s of audio).

:func:`validate_folder` returns the problems (empty = passes); ``s3prl-distill validate-superb``
prints them one per line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import List, Optional

__all__ = ["REQUIRED_FILES", "TOLERANCE_FRAMES", "validate_folder"]

REQUIRED_FILES = ("expert.py", "model.pt", "requirements.txt")
#: frames S3PRL's featurizer tolerates between T and len(wav) / rate
TOLERANCE_FRAMES = 5
_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._ -]+\])?\s*"
                          r"((==|>=|<=|~=|!=|>|<)\s*[A-Za-z0-9.*+!-]+\s*(,\s*(==|>=|<=|~=|!=|>|<)\s*[A-Za-z0-9.*+!-]+\s*)*)?"
                          r"(;.*)?$")

# Runs inside the folder, in a fresh interpreter; prints one JSON line with what it observed.
_PROBE = r'''
import json, math, sys, traceback
import torch
report = {}
try:
    sys.path.insert(0, ".")
    from expert import UpstreamExpert
    torch.manual_seed(0)
    upstream = UpstreamExpert(ckpt="./model.pt")
    upstream.eval()
    report["rate"] = repr(upstream.get_downsample_rates("hidden_states"))
    report["rate_type"] = type(upstream.get_downsample_rates("hidden_states")).__name__
    runs = []
    for lengths in (LENGTHS, [16000]):
        wavs = [0.1 * torch.randn(n) for n in lengths]
        with torch.no_grad():
            out = upstream(wavs)
            again = upstream(wavs)
        if not isinstance(out, dict):
            report["error"] = "forward returned %s, not a dict" % type(out).__name__
            break
        states = out.get("hidden_states")
        run = {"lengths": lengths, "type": type(states).__name__, "shapes": [], "dtypes": [],
               "finite": True, "repeatable": True}
        if isinstance(states, (list, tuple)):
            for i, h in enumerate(states):
                if not torch.is_tensor(h):
                    run["shapes"].append(None); run["dtypes"].append(type(h).__name__); continue
                run["shapes"].append(list(h.shape)); run["dtypes"].append(str(h.dtype))
                run["finite"] = run["finite"] and bool(torch.isfinite(h.float()).all())
                other = again["hidden_states"][i]
                run["repeatable"] = run["repeatable"] and bool(torch.equal(h, other))
        runs.append(run)
    report["runs"] = runs
except Exception as err:
    report["error"] = "".join(traceback.format_exception_only(type(err), err)).strip()
print("SUPERB_PROBE " + json.dumps(report))
'''


def _requirements_problems(path: str) -> List[str]:
    problems = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if not _REQUIREMENT.match(line):
                problems.append(f"requirements.txt line {number}: {line!r} is not a requirement "
                                f"specifier (name[extras] op version)")
            elif re.match(r"^s3prl[-_.]?distill\b", line, re.IGNORECASE):
                problems.append(f"requirements.txt line {number}: the folder must not need "
                                f"s3prl-distill (the hidden set installs torch and your listed packages)")
    return problems


def validate_folder(folder: str, python: Optional[str] = None, lengths=(23456, 16000, 9999),
                    timeout: float = 600.0) -> List[str]:
    """Problems of the submission ``folder`` (empty list = it follows the rules above).

    Args:
        python: interpreter to run the folder with (default: this one); e.g. a venv with torch alone.
        lengths: waveform lengths (samples) of the probe batch.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return [f"{folder}: no such folder"]
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        return [f"{folder}: missing {', '.join(missing)} (a submission holds expert.py, model.pt "
                f"and requirements.txt)"]
    problems = _requirements_problems(os.path.join(folder, "requirements.txt"))
    code = _PROBE.replace("LENGTHS", json.dumps([int(n) for n in lengths]))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        proc = subprocess.run([python or sys.executable, "-c", code], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return problems + [f"{folder}: running expert.py took over {timeout:.0f} s"]
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SUPERB_PROBE ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return problems + [f"{folder}: expert.py could not be run: {tail}"]
    report = json.loads(line[len("SUPERB_PROBE "):])
    if "error" in report:
        return problems + [f"{folder}: {report['error']}"]
    if report.get("rate_type") != "int" or int(report["rate"]) <= 0:
        return problems + [f"{folder}: get_downsample_rates('hidden_states') returned "
                           f"{report.get('rate')} ({report.get('rate_type')}), not a positive int"]
    rate = int(report["rate"])
    for run in report["runs"]:
        shapes, batch = run["shapes"], len(run["lengths"])
        where = f"{folder}: forward on {batch} waveform(s) of {run['lengths']} samples"
        if run["type"] not in ("list", "tuple") or not shapes:
            problems.append(f"{where}: 'hidden_states' is {run['type']}, not a non-empty list of tensors")
            continue
        if any(s is None or len(s) != 3 for s in shapes):
            problems.append(f"{where}: every hidden state must be a tensor [B, T, D], got shapes {shapes}")
            continue
        if any(s != shapes[0] for s in shapes):
            problems.append(f"{where}: hidden states differ in shape ({sorted(set(map(tuple, shapes)))}); "
                            f"the weighted-sum featurizer needs one shape")
            continue
        b, t, _ = shapes[0]
        if b != batch:
            problems.append(f"{where}: batch dimension {b} != {batch}")
        expected = round(max(run["lengths"]) / rate)
        if abs(t - expected) > TOLERANCE_FRAMES:
            problems.append(f"{where}: T = {t} frames, but get_downsample_rates says {rate} samples "
                            f"per frame, i.e. about {expected} (S3PRL tolerates {TOLERANCE_FRAMES})")
        if not all(d.startswith("torch.float") for d in run["dtypes"]):
            problems.append(f"{where}: hidden states must be float tensors, got {sorted(set(run['dtypes']))}")
        if not run["finite"]:
            problems.append(f"{where}: hidden states hold NaN or inf")
        if not run["repeatable"]:
            problems.append(f"{where}: two calls on the same input differ (dropout on? call eval())")
    return problems
