"""Hugging Face folders in (``ntu-spml/distilhubert`` as published: a 2-layer post-LN HubertModel
without the feature-projection LayerNorm), compared with transformers itself on random weights.

What is comparable: our ``hidden_states`` equal transformers' ``output_hidden_states`` for each
utterance alone; in a padded batch ours equal transformers' per-utterance outputs (we normalise
the first conv over valid samples and mask padded keys), and transformers' own padded batch with an
attention mask equals ours for the longest utterance only (its group norm spans the padding, which
is why its feature extractor sends no attention mask for group-norm models).
"""

from __future__ import annotations

import json

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill.checkpoint import load_student
from s3prl_distill.cli import main
from s3prl_distill.convert import detect

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            conv_dim=[16, 24, 24], conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2],
            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, vocab_size=8)
TOL = 1e-5


def hf_model(kind: str, **kw):
    torch.manual_seed(3)
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**TINY, **kw))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY, **kw))
    with torch.no_grad():  # fresh norms and biases are trivial: make every parameter count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


CASES = {
    # ntu-spml/distilhubert's layout
    "distilhubert": ("hubert", dict(feat_proj_layer_norm=False, feat_extract_norm="group",
                                    do_stable_layer_norm=False)),
    "hubert_pre_ln_layer_norm_cnn": ("hubert", dict(feat_extract_norm="layer", do_stable_layer_norm=True,
                                                    conv_bias=True)),
    "wav2vec2": ("wav2vec2", dict(feat_extract_norm="group", do_stable_layer_norm=False)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("safetensors", [True, False])  # False: pytorch_model.bin, old names
def test_converted_equals_transformers(tmp_path, case, safetensors, capsys):
    kind, kw = CASES[case]
    model = hf_model(kind, **kw)
    folder = tmp_path / "hf"
    model.save_pretrained(folder, safe_serialization=safetensors)
    if not safetensors:  # as transformers 4.10 wrote ntu-spml/distilhubert: old weight-norm names
        state = torch.load(folder / "pytorch_model.bin", weights_only=True)
        old = {k.replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
        assert old.keys() != state.keys()
        torch.save(old, folder / "pytorch_model.bin")
    assert detect(str(folder))[0] == "huggingface"
    out = tmp_path / "student.ckpt"
    src = folder if safetensors else folder / "pytorch_model.bin"  # a weight file names its folder
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert "Hugging Face HubertModel / Wav2Vec2Model folder" in capsys.readouterr().out
    ours, meta = load_student(out)
    assert meta["training"]["source_format"] == "huggingface"
    assert ours.config.encoder.feature_layer_norm == (case != "distilhubert")
    g = torch.Generator().manual_seed(1)
    lengths = [4000, 3217, 2003]
    wavs = [torch.randn(n, generator=g) for n in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    mask = (torch.arange(batch.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
    worst = 0.0
    with torch.no_grad():
        ours_batch = ours(batch, torch.tensor(lengths))
        theirs_batch = model(batch, attention_mask=mask, output_hidden_states=True).hidden_states
        for i, w in enumerate(wavs):
            theirs = model(w[None], output_hidden_states=True).hidden_states
            alone = ours(w[None]).hidden_states
            t = int(ours_batch.lengths[i])
            assert len(theirs) == len(alone) == TINY["num_hidden_layers"] + 1
            for a, b, c in zip(theirs, alone, ours_batch.hidden_states):
                assert a.shape == b.shape and a.shape[1] == t
                worst = max(worst, (a - b).abs().max().item(), (a[0] - c[i, :t]).abs().max().item())
        for a, c in zip(theirs_batch, ours_batch.hidden_states):
            worst = max(worst, (a[0] - c[0]).abs().max().item())
    assert worst <= TOL, (case, worst)


def test_unsupported_options_are_named(tmp_path, capsys):
    model = hf_model("hubert", feat_proj_layer_norm=False)
    model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["hidden_act"] = "relu"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    assert main(["convert", str(tmp_path / "hf"), "-o", str(tmp_path / "o.ckpt")]) == 2
    assert "hidden_act" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", str(empty), "-o", str(tmp_path / "o.ckpt")]) == 2
    assert "folder without config.json" in capsys.readouterr().err
