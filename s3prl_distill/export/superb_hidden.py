"""SUPERB hidden-set submission folder of a student: ``expert.py`` + ``model.pt`` + ``requirements.txt``.

The form the SUPERB challenge's submission template takes (``superb/superb-submission`` on the
Hugging Face Hub): ``expert.py`` defines ``UpstreamExpert(ckpt="./model.pt")`` whose
``forward(wavs)`` takes a list of 16 kHz waveforms and returns a dict with ``hidden_states``, a
list of ``[B, T, D]`` tensors of one shape (other task keys optional), and whose
``get_downsample_rates(key)`` returns the samples per frame; only ``torch`` is installed before
the packages ``requirements.txt`` lists.

``model.pt`` is the student traced with TorchScript, from the same export forms as the ONNX graph
(:mod:`.onnx`): right for every batch size and length, runnable with torch alone. Device constants
the tracer records are replaced by the input's device, so the graph runs where its input is.
The folder is checked by :mod:`.validate` (in a subprocess) before this returns.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from typing import Any, Dict, List, Optional

import torch

from s3prl_distill.export import ExportError
from s3prl_distill.export.onnx import StudentGraph, example_batch

logger = logging.getLogger(__name__)

__all__ = ["FILES", "export_superb_hidden", "trace_student"]

FILES = ("expert.py", "model.pt", "requirements.txt", "README.md")
_TEMPLATE = os.path.join(os.path.dirname(__file__), "superb_expert.py")


def _device_from_input(graph: torch._C.Graph, tensor_input: torch._C.Value) -> int:
    """Replace every ``Device`` constant of a traced graph by ``prim::device(input)``."""
    nodes = [n for n in graph.nodes()
             if n.kind() == "prim::Constant" and n.output().type().kind() == "DeviceObjType"]
    if not nodes:
        return 0
    first = next(iter(graph.nodes()))
    device = graph.create("prim::device", [tensor_input])
    device.output().setType(nodes[0].output().type())
    device.insertBefore(first)
    for node in nodes:
        node.output().replaceAllUsesWith(device.output())
        node.destroy()
    return len(nodes)


def trace_student(student) -> torch.jit.ScriptModule:
    """The student (plain path, export forms) traced: ``(wavs [B, S], lengths [B]) ->
    (hidden_state_0, ..., output_lengths)``, device-agnostic."""
    graph = StudentGraph(copy.deepcopy(student).float().eval()).eval()
    base = max(int(student.receptive_field), 400)
    wavs, lengths = example_batch([4 * base + 321, 2 * base + 45])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (wavs, lengths), check_trace=False)
    inputs = list(traced.graph.inputs())  # [self, wavs, lengths]
    _device_from_input(traced.graph, inputs[1])
    return traced


def _requirements() -> str:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return (f"# model.pt is a TorchScript archive written by torch {torch.__version__.split('+')[0]}\n"
            f"torch>={major}.{minor}\n")


def _readme(meta: Dict[str, Any]) -> str:
    return f"""# SUPERB hidden-set upstream: {meta['name']}

Made by `s3prl-distill export CKPT --to superb-hidden`. Needs `torch` only (`requirements.txt`).

```python
from expert import UpstreamExpert
upstream = UpstreamExpert(ckpt="./model.pt").eval()
states = upstream([wav_16khz_1, wav_16khz_2])["hidden_states"]   # {meta['num_hidden_states']} x [B, T, {meta['dim']}]
upstream.get_downsample_rates("hidden_states")                   # {meta['downsample_rate']}
```

`model.pt` is the student traced with TorchScript (`torch.jit.load`); it reads zero-padded
waveforms `[B, S]` and their lengths `[B]` and returns every hidden state plus the valid frames.
Inputs shorter than {meta['receptive_field']} samples are rejected. Check the folder with
`s3prl-distill validate-superb .`
"""


def export_superb_hidden(student, output: str, meta: Optional[Dict[str, Any]] = None,
                         validate: bool = True) -> List[str]:
    """Write the submission folder of ``student`` at ``output`` (absent or empty); returns its files.

    Raises:
        ExportError: ``output`` not empty, or the written folder fails :mod:`.validate`.
    """
    from s3prl_distill.io import atomic_write_text

    output = os.fspath(output)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ExportError(f"{output}: exists and is not an empty folder; choose a new -o")
    info = {
        "name": (meta or {}).get("name") or student.config.family,
        "num_hidden_states": int(student.num_hidden_states),
        "dim": int(student.dim),
        "downsample_rate": int(student.downsample_rate),
        "receptive_field": int(student.receptive_field),
        "torch": torch.__version__,
        "teacher": (meta or {}).get("teacher") or {},
    }
    traced = trace_student(student)
    os.makedirs(output, exist_ok=True)
    try:
        model_path = os.path.join(output, "model.pt")
        torch.jit.save(traced, model_path + ".tmp", _extra_files={"meta.json": json.dumps(info)})
        os.replace(model_path + ".tmp", model_path)
        shutil.copyfile(_TEMPLATE, os.path.join(output, "expert.py"))
        atomic_write_text(_requirements(), os.path.join(output, "requirements.txt"))
        atomic_write_text(_readme(info), os.path.join(output, "README.md"))
        if validate:
            from s3prl_distill.export.validate import validate_folder

            problems = validate_folder(output)
            if problems:
                raise ExportError(f"{output}: the written folder fails validation: {problems[0]}")
    except BaseException:
        for name in FILES:
            path = os.path.join(output, name)
            if os.path.exists(path):
                os.remove(path)
        if not os.listdir(output):
            os.rmdir(output)
        raise
    logger.info("wrote SUPERB hidden-set folder %s (%d hidden states x %d at %d samples/frame)",
                output, info["num_hidden_states"], info["dim"], info["downsample_rate"])
    return [os.path.join(output, name) for name in FILES]
