"""DistillationTask, teacher initialisation and DistillConfig parsing on tiny models."""

from __future__ import annotations

import pytest
import torch
import yaml

import s3prl_distill  # noqa: F401
from distill_fixtures import make_teacher, model_yaml, student_section
from s3prl_distill.config import ConfigError
from s3prl_distill.distill.config import DistillConfig
from s3prl_distill.distill.init import load_init_state
from s3prl_distill.distill.losses import build_loss
from s3prl_distill.distill.task import DistillationTask, check_frame_rates


def _task(tmp_path, style="distilhubert", init=False):
    from s3prl_distill.models import build_student
    from s3prl_distill.teachers import build_teacher

    teacher_path = make_teacher(tmp_path / "teacher.pt")
    cfg = DistillConfig.from_yaml(model_yaml(tmp_path, teacher_path, style, init_from_teacher=init))
    torch.manual_seed(0)
    student = build_student(cfg.student)
    teacher = build_teacher(cfg.teacher)
    return DistillationTask(student, teacher, build_loss(cfg.loss, student.target_layers)), cfg


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    wavs = 0.1 * torch.randn(3, 8000, generator=gen)
    lengths = torch.tensor([8000, 6400, 4000])
    wavs[1, 6400:] = 0
    wavs[2, 4000:] = 0
    return wavs, lengths


def test_frame_rate_check_allows_a_frame_or_two_only():
    check_frame_rates(torch.tensor([6, 3]), torch.tensor([5, 4]), 2)
    with pytest.raises(ValueError, match="downsample rate"):
        check_frame_rates(torch.tensor([10]), torch.tensor([5]), 2)


def test_task_rejects_rate_and_dim_mismatch(tmp_path):
    task, _ = _task(tmp_path)
    task.eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        states, target_lengths = task.teacher_targets(wavs, lengths)
        with pytest.raises(ValueError, match="teacher's dim"):
            task(wavs, lengths, targets=([t[..., :-1] for t in states], target_lengths))
        # targets of half the frame rate: caught on the (first) batch
        half = ([t[:, ::2] for t in states], (target_lengths + 1) // 2)
        with pytest.raises(ValueError, match="downsample rate"):
            task(wavs, lengths, targets=half)


@pytest.mark.parametrize("style", ["distilhubert", "fithubert"])
def test_teacher_outside_graph_and_loss_decreases(tmp_path, style):
    task, _ = _task(tmp_path, style)
    task.train()
    assert not task.teacher.training and task.student.training
    assert all(not p.requires_grad for p in task.teacher.parameters())
    wavs, lengths = _batch()
    targets, _ = task.teacher_targets(wavs, lengths)
    assert all(not t.requires_grad and not t.is_inference() for t in targets)
    opt = torch.optim.Adam(task.student.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss, records = task(wavs, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is None for p in task.teacher.parameters())
    assert losses[-1] < 0.9 * losses[0], losses
    expected = {"l1/layer1", "cos/layer1", "l1/layer2", "cos/layer2"} if style == "distilhubert" \
        else {"mse/layer1", "mse/layer2", "feat", "hint"}
    assert expected <= set(records)
    # frames = valid teacher frames of the batch (8000, 6400, 4000 samples at 320 per frame)
    assert records["frames"].item() == pytest.approx(24 + 19 + 12)


def test_padding_does_not_change_the_loss(tmp_path):
    task, _ = _task(tmp_path)
    task.eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        loss_a, _ = task(wavs[:1, :8000], lengths[:1])
        padded = torch.cat([wavs[:1], torch.zeros(1, 1600)], dim=1)
        loss_b, _ = task(padded, lengths[:1])
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)


@pytest.mark.parametrize("style", ["distilhubert", "fithubert"])
def test_given_targets_skip_the_teacher_and_give_the_same_loss(tmp_path, style):
    task, _ = _task(tmp_path, style)
    task.eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        live, live_records = task(wavs, lengths)
        targets = task.teacher_targets(wavs, lengths)
        calls = []
        task.teacher.register_forward_hook(lambda *a: calls.append(1))
        given, given_records = task(wavs, lengths, targets=targets)
    assert not calls
    assert torch.equal(live, given) and live_records.keys() == given_records.keys()
    with pytest.raises(ValueError, match="1 target tensors for 2 target layers"):
        task(wavs, lengths, targets=(targets[0][:1], targets[1]))
    with pytest.raises(ValueError, match=r"targets must be \[B=3, T, D\]"):
        task(wavs, lengths, targets=([t[:2] for t in targets[0]], targets[1][:2]))


def test_task_rejects_heads_beyond_teacher(tmp_path):
    from s3prl_distill.models import build_student
    from s3prl_distill.config import from_dict
    from s3prl_distill.models.config import StudentConfig

    task, _ = _task(tmp_path)
    section = student_section()
    section["teacher_layers"] = 4
    section["heads"][1]["teacher_layer"] = 4
    student = build_student(from_dict(StudentConfig, section))
    with pytest.raises(ValueError, match="layers 0..2"):
        DistillationTask(student, task.teacher, build_loss(DistillConfig.from_data(
            {"student": section}).loss, student.target_layers))


def test_init_from_teacher_copies_front_end(tmp_path):
    from s3prl_distill.distill.init import init_student_from_teacher

    task, cfg = _task(tmp_path, init=True)
    copied = init_student_from_teacher(task.student, task.teacher, cfg.init)
    assert any(k.startswith("feature_extractor.") for k in copied)
    teacher_state = task.teacher.student_init_state(cfg.init.num_layers)
    own = task.student.state_dict()
    for key in copied:
        assert torch.equal(own[key], teacher_state[key])
    with pytest.raises(ValueError, match="keys not in the student"):
        load_init_state(task.student, {"nope.weight": torch.zeros(1)})
    key = copied[0]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_init_state(task.student, {key: torch.zeros(3, 3, 3, 3)})


def test_distill_config_errors_name_file_and_key(tmp_path):
    teacher_path = make_teacher(tmp_path / "teacher.pt")
    path = model_yaml(tmp_path, teacher_path)
    data = yaml.safe_load(path.read_text())
    cfg = DistillConfig.from_yaml(path)
    assert cfg.loss.type == "distilhubert" and cfg.teacher.source == "torchaudio"
    assert DistillConfig.from_data(cfg.to_data()).to_data() == cfg.to_data()

    data["loss"]["cos_wieght"] = 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"bad\.yaml: loss.*cos_wieght"):
        DistillConfig.from_yaml(bad)
    data["loss"].pop("cos_wieght")
    data["extra"] = 1
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*extra"):
        DistillConfig.from_yaml(bad)
    data.pop("extra")
    data.pop("teacher")
    data["init"] = {"from_teacher": True, "num_layers": 1}
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no 'teacher' section"):
        DistillConfig.from_yaml(bad)
