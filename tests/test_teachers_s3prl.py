"""S3PRL hub upstreams as teachers; S3PRL's hubert_local converted-checkpoint format."""

from __future__ import annotations

import pytest
import torch

from s3prl_distill.teachers import TeacherConfig, TeacherError, build_teacher
from s3prl_distill.teachers.s3prl_hub import S3PRLTeacher, load_s3prl_expert, save_as_s3prl_hubert
from teachers_testutil import padded_batch, tiny_arch, tiny_model

LENGTHS = [8000, 5000, 6411]


class FakeExpert(torch.nn.Module):
    """Stands in for an S3PRL UpstreamExpert: 3 states of [B, T, 8], T = ceil(S / 160), with dropout."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(160, 8)
        self.drop = torch.nn.Dropout(0.5)

    def get_downsample_rates(self, key):
        return 160

    def forward(self, wavs):
        total = max(len(w) for w in wavs)
        frames = -(-total // 160)
        x = torch.stack([torch.nn.functional.pad(w, (0, frames * 160 - len(w))) for w in wavs]).view(len(wavs), frames, 160)
        h = self.drop(self.proj(x))
        return {"hidden_states": [h, h * 2, h * 3]}


def test_fake_expert_lengths_shapes_and_frozen():
    teacher = S3PRLTeacher(FakeExpert(), name="fake_local", path="x.ckpt")
    assert (teacher.num_layers, teacher.dim, teacher.downsample_rate) == (2, 8, 160)
    teacher.train()
    wavs, lengths = padded_batch(LENGTHS)
    one, two = teacher(wavs, lengths), teacher(wavs, lengths)
    assert all(torch.equal(a, b) for a, b in zip(one.hidden_states, two.hidden_states))  # dropout off
    assert one.lengths.tolist() == [50, 31, 40]  # round(S / 160), S3PRL's featurizer rule
    assert teacher.describe()["name"] == "fake_local" and teacher.describe()["source"] == "s3prl"
    with pytest.raises(TeacherError, match="cannot initialise a student"):
        teacher.student_init_state(1)


def test_fake_expert_bad_outputs():
    class NoStates(FakeExpert):
        def forward(self, wavs):
            return {"last_hidden_state": super().forward(wavs)["hidden_states"][0]}

    class Ragged(FakeExpert):
        def forward(self, wavs):
            h = super().forward(wavs)["hidden_states"][0]
            return {"hidden_states": [h, h[:, ::2]]}

    with pytest.raises(TeacherError, match="no 'hidden_states'"):
        S3PRLTeacher(NoStates(), name="x", path=None)
    with pytest.raises(TeacherError, match="one \\[B, T, D\\] shape"):
        S3PRLTeacher(Ragged(), name="x", path=None)


@pytest.mark.slow
def test_hubert_local_matches_our_adapter(tmp_path):
    """S3PRL's own hubert expert on a checkpoint we wrote in its converted format (imports s3prl.hub: slow)."""
    for mode, pre_ln in [("group_norm", False), ("layer_norm", True)]:
        model = tiny_model(tiny_arch(mode, pre_ln))
        torch.save({"state_dict": model.state_dict(), "arch": {"num_heads": 4, "layer_norm_first": pre_ln}},
                   tmp_path / "ta.pt")
        ours = build_teacher({"source": "torchaudio", "path": str(tmp_path / "ta.pt"), "normalize_waveform": pre_ln})
        ckpt = tmp_path / f"hubert_{mode}.ckpt"
        save_as_s3prl_hubert(ours, str(ckpt))
        # S3PRL's own expert (build_teacher would read this file into our adapter)
        theirs = load_s3prl_expert(TeacherConfig(source="s3prl", name="hubert_local", path=str(ckpt)))
        assert (theirs.num_layers, theirs.dim, theirs.downsample_rate) == (2, 64, 320)
        wavs, lengths = padded_batch(LENGTHS)
        a = ours(wavs, lengths)
        assert a.lengths.tolist() == [24, 15, 19]
        for b, n in enumerate(LENGTHS):  # one utterance at a time: S3PRL's group norm sees the padding
            single = theirs(wavs[b:b + 1, :n], lengths[b:b + 1])
            assert single.lengths.tolist() == [min(round(n / 320), single.hidden_states[0].shape[1])]
            k = int(a.lengths[b])
            for i, (x, y) in enumerate(zip(a.hidden_states, single.hidden_states)):
                assert (x[b, :k] - y[0, :k]).abs().max() < 1e-4, (mode, b, i)
        # the padded batch: the unpadded item agrees; shorter items differ by design (S3PRL's group
        # norm sees the padding, and fairseq counts a frame valid if any of its 320 samples is)
        batch = theirs(wavs, lengths)
        assert batch.lengths.tolist() == [24, 16, 20]
        for x, y in zip(a.hidden_states, batch.hidden_states):
            assert (x[0, :24] - y[0, :24]).abs().max() < 1e-4


@pytest.mark.slow
def test_s3prl_errors(tmp_path):
    with pytest.raises(TeacherError, match="no hub entry 'hubert_nonexistent'"):
        (tmp_path / "x.ckpt").write_bytes(b"")
        build_teacher({"source": "s3prl", "name": "hubert_nonexistent", "path": str(tmp_path / "x.ckpt")})
    torch.save({"model_weight": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(TeacherError, match="could not load it"):
        build_teacher({"source": "s3prl", "name": "hubert_local", "path": str(tmp_path / "bad.ckpt")})


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(TeacherError, match="no such file"):
        build_teacher({"source": "s3prl", "name": "hubert_local", "path": str(tmp_path / "none.ckpt")})


@pytest.mark.slow
def test_s3prl_padding_and_eval_mode_reproduce_s3prls_teacher_on_a_padded_batch(tmp_path):
    """teacher.padding: s3prl = S3PRL's own HuBERT expert on the padded batch (group norm over the
    padding, fairseq's frame rule); with dropout its train mode is S3PRL's distiller teacher."""
    from s3prl_distill.teachers.wav2vec2 import s3prl_frame_lengths

    model = tiny_model(tiny_arch("group_norm", False))
    torch.save({"state_dict": model.state_dict(), "arch": {"num_heads": 4, "layer_norm_first": False,
                                                           "dropout": 0.0, "attention_dropout": 0.0}},
               tmp_path / "ta.pt")
    ours = build_teacher({"source": "torchaudio", "path": str(tmp_path / "ta.pt"), "padding": "s3prl"})
    masked = build_teacher({"source": "torchaudio", "path": str(tmp_path / "ta.pt")})
    save_as_s3prl_hubert(ours, str(tmp_path / "h.ckpt"))
    hub = {"source": "s3prl", "name": "hubert_local", "path": str(tmp_path / "h.ckpt")}
    theirs = load_s3prl_expert(TeacherConfig(**hub))  # S3PRL's own module
    adapted = build_teacher(hub)  # the same file through our adapter: S3PRL's padding by default
    adapted_masked = build_teacher({**hub, "padding": "masked"})
    assert type(adapted).__name__ == "Wav2Vec2Teacher" and adapted.describe()["name"] == "hubert_local"
    wavs, lengths = padded_batch(LENGTHS)
    a, b, m = ours(wavs, lengths), theirs(wavs, lengths), masked(wavs, lengths)
    c, d = adapted(wavs, lengths), adapted_masked(wavs, lengths)
    assert a.lengths.tolist() == b.lengths.tolist() == c.lengths.tolist() == [24, 16, 20]
    assert s3prl_frame_lengths(lengths, wavs.shape[1], 24).tolist() == [24, 16, 20]
    for x, y, z, u, v in zip(a.hidden_states, b.hidden_states, m.hidden_states, c.hidden_states,
                             d.hidden_states):
        for i, n in enumerate(a.lengths.tolist()):
            assert (x[i, :n] - y[i, :n]).abs().max() < 1e-4, i
            assert (u[i, :n] - y[i, :n]).abs().max() < 1e-4, i
        for i, n in enumerate(m.lengths.tolist()):
            assert (v[i, :n] - z[i, :n]).abs().max() < 1e-4, i
        assert (x[1, :15] - z[1, :15]).abs().max() > 1e-3  # the masked default differs on short items
    assert ours.describe()["padding"] == "s3prl"
    with pytest.raises(Exception, match="padding"):
        load_s3prl_expert(TeacherConfig(**hub)).configure(padding="masked")
    with pytest.raises(Exception, match="padding"):
        build_teacher({"source": "whisper_ct2", "path": None, "padding": "s3prl"})


def test_a_hub_name_without_path_asks_s3prl_for_its_own_copy(monkeypatch):
    """S3PRL's distiller names its teacher only (hubert_base): we ask S3PRL's hub entry for its own
    checkpoint (fetched into S3PRL's download cache on first use); offline and uncached, one line
    says so and names the way out."""
    from s3prl_distill.teachers import build_teacher, s3prl_hub
    from s3prl_distill.teachers.base import TeacherError

    calls = []

    def entry(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(s3prl_hub, "_hub_entry", lambda name: entry)
    with pytest.raises(TeacherError, match=r"hub model 'hubert_base'.*download cache.*teacher.local"):
        build_teacher({"source": "s3prl", "name": "hubert_base", "path": None})
    assert calls == [{}]  # no ckpt: the entry's own
