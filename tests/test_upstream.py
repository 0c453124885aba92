"""The S3PRL upstream: hub entries, both S3PRL featurizers, heads really dropped, family checks."""

from __future__ import annotations

import pytest
import torch

import s3prl_distill  # noqa: F401
from s3prl_distill import compat
from s3prl_distill.checkpoint import CheckpointError, save_student
from s3prl_distill.config import from_dict
from s3prl_distill.models import StudentConfig, build_student
from s3prl_distill.lengths import pad_waveforms as pad_wavs
from s3prl_distill.upstream.expert import UpstreamExpert
from s3prl_distill.upstream.hubconf import ENTRIES

SR = 16000
# HuBERT's conv arithmetic (stride 320, receptive field 400) with tiny widths
CNN = [{"channels": 8, "kernel": 10, "stride": 5}] + [{"channels": 8, "kernel": 3, "stride": 2}] * 4 \
    + [{"channels": 8, "kernel": 2, "stride": 2}] * 2
ENC = {"dim": 16, "ffn_dim": 24, "num_heads": 2, "num_layers": 3, "pos_conv_kernel": 8,
       "pos_conv_groups": 2}


def distil_cfg(**over) -> StudentConfig:
    data = {"family": "distilhubert", "cnn": {"layers": CNN}, "encoder": ENC, "teacher_dim": 16,
            "heads": [{"student_layer": 3, "teacher_layer": t} for t in (4, 8, 12)]}
    data.update(over)
    return from_dict(StudentConfig, data, where="test")


def fit_cfg(**over) -> StudentConfig:
    data = {"family": "fithubert", "cnn": {"layers": CNN}, "encoder": ENC, "time_reduction": 2,
            "teacher_dim": 12, "teacher_layers": 3,
            "heads": [{"student_layer": i, "teacher_layer": i, "type": "deconv_linear"} for i in (1, 2, 3)]}
    data.update(over)
    return from_dict(StudentConfig, data, where="test")


@pytest.fixture
def ckpts(tmp_path):
    torch.manual_seed(0)
    paths = {}
    for name, cfg in {
        "distil": distil_cfg(),
        "distil_kept": distil_cfg(teacher_dim=16, keep_heads=True, hidden_states="layers+heads"),
        "fit": fit_cfg(),
        "fit_heads": fit_cfg(keep_heads=True, hidden_states="heads"),
        "custom": distil_cfg(family="custom"),
    }.items():
        paths[name] = tmp_path / f"{name}.ckpt"
        save_student(paths[name], build_student(cfg))
    return paths


def _batch():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(SR, generator=g), torch.randn(int(7.3 * SR), generator=g)]


@pytest.mark.parametrize("name, entry, n_states, dim, rate", [
    ("distil", "distilhubert_local", 4, 16, 320),
    ("distil_kept", "distilhubert_local", 7, 16, 320),
    ("fit", "fithubert_local", 4, 16, 640),
    ("fit_heads", "fithubert_local", 3, 12, 320),
    ("custom", "distill_student_local", 4, 16, 320),
])
def test_legacy_featurizer(ckpts, name, entry, n_states, dim, rate):
    """s3prl.upstream.interfaces.Featurizer, as used by run_downstream."""
    from s3prl.upstream.interfaces import Featurizer

    upstream = ENTRIES[entry](ckpt=str(ckpts[name]), model_config=None, refresh=False)
    assert isinstance(upstream, UpstreamExpert)
    assert upstream.get_downsample_rates("hidden_states") == rate
    wavs = _batch()
    with torch.no_grad():
        feats = upstream(wavs)
    hs = feats["hidden_states"]
    assert len(hs) == n_states and len({tuple(h.shape) for h in hs}) == 1
    assert hs[0].shape[0] == 2 and hs[0].shape[-1] == dim
    assert abs(hs[0].shape[1] - round(len(wavs[1]) / rate)) <= 1
    assert torch.equal(feats["last_hidden_state"], hs[-1])

    featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device="cpu")
    assert featurizer.downsample_rate == rate and featurizer.output_dim == dim
    out = featurizer(wavs, feats)
    # S3PRL cuts each utterance at round(len / rate) frames (capped by the batch's frames)
    t = hs[0].shape[1]
    assert [tuple(f.shape) for f in out] == [(min(round(len(w) / rate), t), dim) for w in wavs]
    # the short utterance's valid frames equal its frames when run alone
    with torch.no_grad():
        alone = upstream([wavs[0]])["hidden_states"]
    n = int(feats["lengths"][0])
    for a, b in zip(hs, alone):
        assert torch.allclose(a[0, :n], b[0], atol=1e-5)


@pytest.mark.parametrize("name, entry", [("distil", "distilhubert_local"), ("fit", "fithubert_local"),
                                          ("fit_heads", "distill_student_local")])
def test_s3prl_upstream_and_featurizer(ckpts, name, entry, monkeypatch):
    """s3prl.nn.S3PRLUpstream (looks the entry up on s3prl.hub) + s3prl.nn.Featurizer."""
    if hasattr(compat, "apply"):
        compat.apply()
    import s3prl.hub as hub
    from s3prl.nn import Featurizer, S3PRLUpstream

    for key, fn in ENTRIES.items():
        monkeypatch.setattr(hub, key, fn, raising=False)
    upstream = S3PRLUpstream(entry, path_or_url=str(ckpts[name])).eval()
    featurizer = Featurizer(upstream)
    wavs = _batch()
    lens = torch.tensor([len(w) for w in wavs])
    batch, _ = pad_wavs(wavs)
    with torch.no_grad():
        all_hs, all_lens = upstream(batch, lens)
        hs, hs_len = featurizer(all_hs, all_lens)
    rate = upstream.downsample_rates[0]
    assert hs.shape[0] == 2 and hs.shape[-1] == upstream.hidden_sizes[0]
    assert hs_len.tolist() == [(int(n) - 1) // rate + 1 for n in lens]
    assert hs.shape[1] == max(hs_len)


def test_heads_really_dropped(ckpts):
    up = ENTRIES["distilhubert_local"](ckpt=str(ckpts["distil"]))
    assert len(up.model.heads) == 0
    assert not any(n.startswith("model.heads") for n, _ in up.named_parameters())
    kept = ENTRIES["distilhubert_local"](ckpt=str(ckpts["distil_kept"]))
    n_up = sum(p.numel() for p in up.parameters())
    n_kept = sum(p.numel() for p in kept.parameters())
    head_params = sum(p.numel() for p in kept.model.heads.parameters())
    assert head_params > 0 and n_kept - n_up == head_params


def test_model_config_can_keep_heads(ckpts, tmp_path):
    conf = tmp_path / "expert.yaml"
    conf.write_text("keep_heads: true\n")
    up = ENTRIES["distilhubert_local"](ckpt=str(ckpts["distil"]), model_config=str(conf))
    assert len(up.model.heads) == 3
    conf.write_text("keep_head: true\n")
    with pytest.raises(ValueError, match="keep_head"):
        ENTRIES["distilhubert_local"](ckpt=str(ckpts["distil"]), model_config=str(conf))


def test_family_mismatch_and_bad_paths(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match=r"fit\.ckpt.*distilhubert_local.*'fithubert'.*fithubert_local"):
        ENTRIES["distilhubert_local"](ckpt=str(ckpts["fit"]))
    with pytest.raises(CheckpointError, match=r"distil\.ckpt.*'distilhubert'"):
        ENTRIES["fithubert_local"](ckpt=str(ckpts["distil"]))
    with pytest.raises(CheckpointError, match="distill_student_local"):
        ENTRIES["distilhubert_local"](ckpt=str(ckpts["custom"]))
    assert ENTRIES["distill_student_local"](ckpt=str(ckpts["fit"])).get_downsample_rates("x") == 640
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        ENTRIES["distill_student_local"](ckpt=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="ckpt"):
        ENTRIES["fithubert_local"]()


def test_hub_entries_read_the_checkpoint_once(ckpts, monkeypatch):
    from s3prl_distill import checkpoint

    reads = []
    real = checkpoint.safe_load
    monkeypatch.setattr(checkpoint, "safe_load", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    for entry, name in [("distilhubert_local", "distil"), ("fithubert_local", "fit"),
                        ("distill_student_local", "custom")]:
        reads.clear()
        ENTRIES[entry](ckpt=str(ckpts[name]))
        assert reads == [str(ckpts[name])], (entry, reads)


def test_padding_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        pad_wavs([])
    with pytest.raises(ValueError, match="waveform 1"):
        pad_wavs([torch.zeros(500), torch.zeros(2, 500)])


@pytest.mark.slow
@pytest.mark.parametrize("name, entry, n_states, dim, rate", [
    ("distilhubert.yaml", "distilhubert_local", 3, 768, 320),
    ("fithubert.yaml", "fithubert_local", 13, 480, 640),
])
def test_published_configs_end_to_end(tmp_path, capsys, name, entry, n_states, dim, rate):
    """init CONFIG -> checkpoint -> s3prl.hub entry (via registry) -> both featurizers."""
    from pathlib import Path

    from s3prl_distill import cli, registry
    from s3prl.nn import Featurizer as NewFeaturizer, S3PRLUpstream
    from s3prl.upstream.interfaces import Featurizer

    config = Path(__file__).resolve().parents[1] / "upstream_configs" / name
    ckpt = tmp_path / "student.ckpt"
    assert cli.main(["init", str(config), "-o", str(ckpt), "--no-teacher-init"]) == 0
    registry.register()
    import s3prl.hub as hub

    upstream = getattr(hub, entry)(ckpt=str(ckpt), model_config=None, refresh=False)
    assert len(upstream.model.heads) == 0
    wavs = _batch()
    with torch.no_grad():
        feats = upstream(wavs)
    assert len(feats["hidden_states"]) == n_states
    assert {tuple(h.shape) for h in feats["hidden_states"]} == {(2, feats["hidden_states"][0].shape[1], dim)}
    featurizer = Featurizer(upstream, feature_selection="hidden_states", upstream_device="cpu")
    assert featurizer.downsample_rate == rate and featurizer.output_dim == dim
    t = feats["hidden_states"][0].shape[1]
    assert [f.shape[0] for f in featurizer(wavs, feats)] == [min(round(len(w) / rate), t) for w in wavs]

    new = S3PRLUpstream(entry, path_or_url=str(ckpt)).eval()
    batch, lens = pad_wavs(wavs)
    with torch.no_grad():
        hs, hs_len = NewFeaturizer(new)(*new(batch, lens))
    assert hs.shape[-1] == dim and hs_len.tolist() == [(int(n) - 1) // rate + 1 for n in lens]
