"""Kaldi-style diarization folders (LibriMix's ``prepare_diarization.py``) for SD (``-d diarization``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List, Sequence

from s3prl_distill.superb.prepare.common import PrepareError, need_dir, need_file, write_lines

__all__ = ["prepare_sd"]


def _read_table(path: Path, min_fields: int) -> List[List[str]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                raise PrepareError(
                    f"{path}:{number}: expected at least {min_fields} fields, got {line!r}")
            rows.append(fields)
    return rows


def prepare_sd(source, out, splits: Sequence[str] = ("train", "dev", "test")) -> Dict[str, Path]:
    """SD: Kaldi-style ``wav.scp``, ``segments``, ``utt2spk`` per split.

    Copies them (and ``rttm`` if present) to ``<out>/<split>`` and derives what the task also reads:
    ``reco2dur`` (seconds, from the audio headers) and ``spk2utt``.
    """
    from s3prl_distill.audio import audio_info

    source = Path(source)
    out = Path(out)
    written = {}
    for split in splits:
        src = need_dir(source / split, f"diarization '{split}' data")
        dst = out / split
        dst.mkdir(parents=True, exist_ok=True)
        wavs = _read_table(need_file(src / "wav.scp", "wav.scp"), 2)
        segments = _read_table(need_file(src / "segments", "segments"), 4)
        utt2spk = _read_table(need_file(src / "utt2spk", "utt2spk"), 2)
        recordings = {}
        for rec, path in wavs:
            if not Path(path).is_file():
                raise PrepareError(f"{src / 'wav.scp'}: audio of {rec} ({path}) not found")
            recordings[rec] = path
        speakers = {u: s for u, s in utt2spk}
        for utt, rec, start, end in (row[:4] for row in segments):
            if rec not in recordings:
                raise PrepareError(f"{src / 'segments'}: {utt} names recording {rec} not in wav.scp")
            if utt not in speakers:
                raise PrepareError(f"{src / 'segments'}: {utt} has no line in utt2spk")
            if not float(start) < float(end):
                raise PrepareError(f"{src / 'segments'}: {utt} has start {start} >= end {end}")
        for name in ("wav.scp", "segments", "utt2spk", "rttm"):
            if (src / name).is_file() and src.resolve() != dst.resolve():
                shutil.copyfile(src / name, dst / name)
        durations = []
        for rec, path in wavs:
            info = audio_info(path)
            durations.append(f"{rec} {info.num_frames / info.sample_rate:.3f}")
        write_lines(dst / "reco2dur", durations)
        spk2utt: Dict[str, List[str]] = {}
        for utt, spk in utt2spk:
            spk2utt.setdefault(spk, []).append(utt)
        write_lines(dst / "spk2utt", [" ".join([s] + u) for s, u in sorted(spk2utt.items())])
        written[split] = dst
    return written
