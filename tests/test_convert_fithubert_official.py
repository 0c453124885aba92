"""Official FitHuBERT checkpoints in: our converted student equals the official model.

The official model (github glory20h/FitHuBERT) cannot be imported here (it needs fairseq), so
its outputs are committed as reference figures, ``tests/data/fithubert_official_tiny.json``.
How they were computed (once, outside this project, nothing of it committed):

* the official repository at commit 36d999c050e158a3a91fecddb3128cd19ccb24a8: its
  ``modules/model.py`` and ``modules/module.py`` copied unchanged to a folder under /tmp, with the
  fairseq modules they use for the forward pass copied unchanged from fairseq commit
  1b61bbad327d2bf32502b3b9a770b57714cc43dc (the commit the official Dockerfile pins):
  ``utils.py``, ``incremental_decoding_utils.py``, ``modules/{multihead_attention, fairseq_dropout,
  quant_noise, layer_norm, fp32_group_norm, grad_multiply, same_pad, transpose_last, gelu}.py``
  and ``init_bert_params``; stubs for what the forward pass never touches
  (``FairseqDataclass`` = a plain dataclass, ``BaseFairseqModel`` = ``nn.Module``,
  ``checkpoint_wrapper`` = identity, conformer / relative-position / MelSpectrogram classes that
  raise). Run with torch 2.13 (CPU, float32) in this project's Python.
* two tiny models of the released architecture (``distiller`` in the JSON: released
  ``fithubert.yaml`` keys with a 6-layer CNN of stride 40, 3 layers x 24 dims, 4 heads, positional
  conv 8 / 4 groups, layer-wise heads to a 40-dim teacher, Conv1d time reduction at index 0) with
  k = 2 and k = 3, built by ``CustomStudentModel(CustomStudentModelConfig(**distiller))``.
* weights: every tensor of its ``state_dict()``, in sorted-name order, drawn from one
  ``torch.Generator().manual_seed(weight_seed)``: ``r = torch.randn(shape)``; 1-D tensors named
  ``*weight`` -> ``1 + 0.1 r``, other 1-D -> ``0.1 r``, others -> ``r / sqrt(numel / shape[0])``
  (:func:`official_state_dict` regenerates them from ``state_shapes``).
* inputs: ``0.1 * torch.randn(n)`` for n in ``wav_lengths``, in order, from
  ``torch.Generator().manual_seed(wav_seed)``; CNN frame counts 39, 38, 35, 31 (odd and even).
* ``model.eval()``; each waveform alone (``padding_mask=None``) and the zero-padded batch with the
  official padding mask (True = padding, as the official dataset builds it).
* figures per valid state [T, D] (``tr_layer_results[0]`` = our layer 0, ``layer_results[i][0]`` =
  layer i+1, ``projections[j]`` = head j): shape, float64 sum and norm, the first two and last two
  frames (9 significant digits).
* loss: the official ``W2V2Distil.calculate_loss`` (its source taken from ``train.py`` and run on a
  stand-in ``self``: rec_loss_type mse, rec_loss_weight 1, distil_random_layer = layers - 1 (every
  hint), random_layer_weight 0.1, pred_layer_id [layers - 1]) against teacher states
  ``torch.randn((layers, 1, T_cnn, 40))`` from ``torch.Generator().manual_seed(teacher_seed + i)``
  for waveform i alone (layer j + 1 = index j). Its terms ``rand_l*`` are already weighted by 0.1.

What is compared: converted with ``time_reduction_tail: drop`` (the official rule), our hidden
states, heads and loss (through ``DistillationTask``) equal the figures to 1e-5 (slices, norms,
loss) and 1e-4 (sums over up to 1,560 values); measured max abs diff 2.7e-6 on the slices. In the
padded batch the longest utterance equals the official figures; the shorter ones equal the
official figures of the same utterance ALONE: the official first group norm spans the padding, ours
only the valid samples (see docs/MODELS.md).
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.checkpoint import CheckpointError, load_student
from s3prl_distill.convert import convert_path, detect, write_converted
from s3prl_distill.convert.loading import pickled_globals

FIGURES = json.loads((Path(__file__).parent / "data" / "fithubert_official_tiny.json").read_text())
SLICE_TOL, SUM_TOL = 1e-5, 1e-4


def official_state_dict(shapes, seed):
    """The official student's weights, regenerated as the figures' docstring says."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        r = torch.randn(shape, generator=g)
        if len(shape) == 1:
            r = 1.0 + 0.1 * r if name.endswith("weight") else 0.1 * r
        else:
            r = r / math.sqrt(r.numel() / shape[0])
        out[name] = r
    return out


def waveforms():
    g = torch.Generator().manual_seed(FIGURES["wav_seed"])
    return [0.1 * torch.randn(n, generator=g) for n in FIGURES["wav_lengths"]]


def _fake_modules(monkeypatch):
    """Importable stand-ins of Lightning / torchmetrics classes, so torch.save pickles them by
    those names (they are removed again before loading: convert must not need them)."""
    made = {}
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing",
                 "torchmetrics", "torchmetrics.metric"):
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)
        made[name] = module

    class AttributeDict(dict):
        pass

    class Metric:
        def __init__(self):
            self.reduce_fx = torch.mean
            self.value = torch.tensor(2.5)

    for cls, mod in ((AttributeDict, "pytorch_lightning.utilities.parsing"), (Metric, "torchmetrics.metric")):
        cls.__module__ = mod
        cls.__qualname__ = cls.__name__
        setattr(made[mod], cls.__name__, cls)
    return AttributeDict, Metric


def lightning_checkpoint(tmp_path, monkeypatch, key, hparams=True, name="official.ckpt"):
    """An official-layout Lightning checkpoint of the tiny model ``key`` (k2 | k3)."""
    model = FIGURES["models"][key]
    state = {"student_model." + k: v for k, v in official_state_dict(model["state_shapes"], FIGURES["weight_seed"]).items()}
    state["teacher_model.model.encoder.layer_norm.weight"] = torch.ones(40)  # the teacher rides along
    with monkeypatch.context() as patch:
        AttributeDict, Metric = _fake_modules(patch)
        ckpt = {
            "epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.5.10",
            "state_dict": state,
            "callbacks": {"EarlyStopping{'monitor': 'v_loss', 'mode': 'min'}": {"wait_count": 2,
                                                                               "best_score": torch.tensor(0.5)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]}],
            "lr_schedulers": [],
            "loops": {"fit_loop": {"epoch_loop.val_loop._results": {"v_loss": Metric()}}},
            "native_amp_scaling_state": {"scale": 65536.0, "_growth_tracker": 3},
        }
        if hparams:
            ckpt["hparams_name"] = "kwargs"
            ckpt["hyper_parameters"] = AttributeDict(
                cfg={"teacher": {"teacher_model": "hubert_base_ls960.pt"}, "distiller": model["distiller"]})
        path = tmp_path / name
        torch.save(ckpt, path)
    assert "pytorch_lightning" not in sys.modules  # the fake classes are gone again
    return path


def close(x: torch.Tensor, fig, what):
    assert list(x.shape) == fig["shape"], (what, list(x.shape), fig["shape"])
    for part, ref in (("first2", x[:2]), ("last2", x[-2:])):
        diff = (ref - torch.tensor(fig[part])).abs().max().item()
        assert diff <= SLICE_TOL, (what, part, diff)
    assert abs(x.double().sum().item() - fig["sum"]) <= SUM_TOL, (what, "sum")
    assert abs(x.double().norm().item() - fig["norm"]) <= SLICE_TOL * max(1.0, fig["norm"]), (what, "norm")


def convert_to(tmp_path, src, **options):
    out = tmp_path / f"converted-{len(list(tmp_path.iterdir()))}.ckpt"
    write_converted(convert_path(str(src)), str(out), **options)
    student, meta = load_student(out, keep_heads=True)
    return student, meta


@pytest.mark.parametrize("key", ["k2", "k3"])
def test_converted_student_equals_official_figures(tmp_path, monkeypatch, key):
    src = lightning_checkpoint(tmp_path, monkeypatch, key)
    assert "pytorch_lightning.utilities.parsing.AttributeDict" in pickled_globals(str(src))
    assert detect(str(src))[0] == "fithubert_official"
    student, meta = convert_to(tmp_path, src)
    assert "pytorch_lightning" not in sys.modules  # nothing was imported to read it
    model = FIGURES["models"][key]
    k = model["distiller"]["tr_reduce_factor"]
    assert student.config.time_reduction == k and student.config.time_reduction_tail == "drop"
    assert meta["training"]["source_format"] == "fithubert_official"
    assert meta["training"]["global_step"] == 1234
    assert meta["teacher"] == {"teacher_model": "hubert_base_ls960.pt"}
    assert any(d.startswith("teacher_model.*") for d in meta["training"]["dropped"])
    wavs = waveforms()
    with torch.no_grad():
        for i, w in enumerate(wavs):
            fig = model["alone"][i]
            out = student(w[None])
            assert int(out.layer_lengths[0]) == fig["reduced_frames"] == fig["cnn_frames"] // k
            assert int(out.prediction_lengths[0]) == fig["head_frames"] == k * (fig["cnn_frames"] // k)
            for j, (state, f) in enumerate(zip(out.layer_outputs, fig["hidden"])):
                close(state[0, : f["shape"][0]], f, (key, i, "layer", j))
            for j, (pred, f) in enumerate(zip(out.predictions, fig["heads"])):
                close(pred[0, : f["shape"][0]], f, (key, i, "head", j))
        # the padded batch: lengths as the official padding mask; every utterance's valid frames
        # equal the official figures of that utterance alone (the longest: of the batch, too)
        lengths = torch.tensor(FIGURES["wav_lengths"])
        batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        out = student(batch, lengths)
        padded = model["padded"]
        assert student.feature_extractor.output_lengths(lengths).tolist() == padded["cnn_valid_frames_from_mask"]
        assert out.layer_outputs[0].shape[1] == padded["reduced_frames"]
        assert out.predictions[0].shape[1] >= padded["head_frames"]
        for i in range(len(wavs)):
            for j, f in enumerate(model["alone"][i]["hidden"]):
                close(out.layer_outputs[j][i, : f["shape"][0]], f, (key, "batch", i, j))
            for j, f in enumerate(model["alone"][i]["heads"]):
                close(out.predictions[j][i, : f["shape"][0]], f, (key, "batch", i, "head", j))
        for j, f in enumerate(padded["items"][0]["hidden"]):
            close(out.layer_outputs[j][0, : f["shape"][0]], f, (key, "padded-longest", j))


@pytest.mark.parametrize("key", ["k2", "k3"])
def test_loss_equals_official_calculate_loss(tmp_path, monkeypatch, key):
    from s3prl_distill.distill.losses import FitHuBERTLoss
    from s3prl_distill.distill.task import DistillationTask

    student, _ = convert_to(tmp_path, lightning_checkpoint(tmp_path, monkeypatch, key))
    model = FIGURES["models"][key]
    n_layers = model["distiller"]["encoder_layers"]
    assert student.target_layers == list(range(1, n_layers + 1))

    class CachedTeacher(torch.nn.Module):
        num_layers = n_layers

    task = DistillationTask(student, CachedTeacher(), FitHuBERTLoss(student.target_layers, hint_weight=0.1)).eval()
    for i, w in enumerate(waveforms()):
        fig = model["alone"][i]
        g = torch.Generator().manual_seed(FIGURES["teacher_seed"] + i)
        teacher = torch.randn((n_layers, 1, fig["cnn_frames"], FIGURES["teacher_dim"]), generator=g)
        targets = ([teacher[j] for j in range(n_layers)], torch.tensor([fig["cnn_frames"]]))
        with torch.no_grad():
            loss, records = task(w[None], torch.tensor([len(w)]), targets=targets)
        assert abs(float(loss) - fig["loss"]) <= SLICE_TOL, (key, i, float(loss), fig["loss"])
        assert int(records["frames"]) == fig["head_frames"]


@pytest.mark.parametrize("key", ["k2", "k3"])
def test_padded_batch_loss_equals_official_with_the_official_switches(tmp_path, monkeypatch, key):
    """The official training loss on a zero-padded batch (its group norm over the padding, its
    encoder's padded frames fed to the time reduction, the last partial group dropped, every
    frame of the predictions in the mean, the teacher narrowed to them) - reproduced by our
    student and loss with the official behaviour switched on:
    cnn.group_norm_over_padding, time_reduction_sees_padding, time_reduction_tail: drop (the
    converter's default) and loss.include_padded_frames. Figure: ``padded.loss`` (the official
    ``calculate_loss`` on the batch of ``padded.items`` with a teacher from ``padded.teacher_seed``).
    Our default (padding masked) gives another value on purpose."""
    import dataclasses

    from s3prl_distill.distill.losses import FitHuBERTLoss
    from s3prl_distill.distill.task import DistillationTask
    from s3prl_distill.models import build_student

    converted, _ = convert_to(tmp_path, lightning_checkpoint(tmp_path, monkeypatch, key))
    model = FIGURES["models"][key]
    padded = model["padded"]
    n_layers = model["distiller"]["encoder_layers"]
    cfg = converted.config
    official = dataclasses.replace(cfg, time_reduction_sees_padding=True,
                                   cnn=dataclasses.replace(cfg.cnn, group_norm_over_padding=True))
    student = build_student(official)
    student.load_state_dict(converted.state_dict())

    class CachedTeacher(torch.nn.Module):
        num_layers = n_layers

    lengths = torch.tensor(FIGURES["wav_lengths"])
    batch = torch.nn.utils.rnn.pad_sequence(waveforms(), batch_first=True)
    g = torch.Generator().manual_seed(padded["teacher_seed"])
    teacher = torch.randn((n_layers, len(lengths), padded["teacher_frames"], FIGURES["teacher_dim"]), generator=g)
    targets = ([teacher[j] for j in range(n_layers)], torch.tensor(padded["cnn_valid_frames_from_mask"]))
    losses = {}
    for name, include, stud in (("official", True, student), ("ours", False, converted)):
        loss_fn = FitHuBERTLoss(stud.target_layers, hint_weight=0.1, include_padded_frames=include)
        task = DistillationTask(stud, CachedTeacher(), loss_fn).eval()
        with torch.no_grad():
            losses[name], _ = task(batch, lengths, targets=targets)
    assert abs(float(losses["official"]) - padded["loss"]) <= SLICE_TOL, (key, float(losses["official"]), padded["loss"])
    assert abs(float(losses["ours"]) - padded["loss"]) > 10 * SLICE_TOL  # masked padding: another value


def test_config_from_yaml_when_hyper_parameters_are_absent(tmp_path, monkeypatch):
    import yaml

    from s3prl_distill.cli import main

    src = lightning_checkpoint(tmp_path, monkeypatch, "k2", hparams=False)
    with pytest.raises(CheckpointError, match="--config"):
        convert_path(str(src))
    cfg = tmp_path / "FitHuBERT.yaml"
    cfg.write_text(yaml.safe_dump({"distiller": FIGURES["models"]["k2"]["distiller"]}))
    assert main(["convert", str(src), "--config", str(cfg), "-o", str(tmp_path / "a.ckpt")]) == 0
    student, _ = load_student(tmp_path / "a.ckpt")
    assert student.config.time_reduction == 2 and len(student.heads) == 0


def test_cli_names_the_format_and_never_overwrites(tmp_path, monkeypatch, capsys):
    from s3prl_distill.cli import main

    src = lightning_checkpoint(tmp_path, monkeypatch, "k2")
    out = tmp_path / "student.ckpt"
    assert main(["convert", str(src), "-o", str(out), "--time-reduction-tail", "pad"]) == 0
    text = capsys.readouterr().out
    assert "official FitHuBERT / FitW2V2 PyTorch Lightning checkpoint" in text
    assert "tail: pad" in text and "dropped teacher_model.*" in text and "upsampler.*" in text
    before = out.read_bytes()
    assert main(["convert", str(src), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_refusals_name_the_setting(tmp_path, monkeypatch):
    model = FIGURES["models"]["k2"]
    state = {"student_model." + k: v for k, v in official_state_dict(model["state_shapes"], 0).items()}
    for change, word in ((dict(tr_layer_type="fc1"), "tr_layer_type"), (dict(tr_layer_index=1), "tr_layer_index"),
                         (dict(required_seq_len_multiple=2), "required_seq_len_multiple"),
                         (dict(layerwise_proj=False), "layerwise_proj")):
        path = tmp_path / f"{word}.ckpt"
        torch.save({"state_dict": state, "hyper_parameters": {"cfg": {"distiller": {**model["distiller"], **change}}}},
                   path)
        with pytest.raises(CheckpointError, match=word):
            convert_path(str(path))
