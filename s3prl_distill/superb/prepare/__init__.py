"""Data preparation for the ten SUPERB tasks: official corpus layout in, what S3PRL's task reads out.

One module per corpus; the command is ``s3prl-distill prepare TASK ...``
(:mod:`s3prl_distill.commands.prepare`; ``python -m s3prl_distill.superb.prepare TASK ...`` is the
same, for the recipes in ``downstream_recipes/<task>/run.sh``). Every function checks the official
layout and fails with :class:`PrepareError` naming the missing file or bad line; what a task reads
that its corpus does not ship is written under ``--out`` (never into S3PRL's installed package).

| task | module             | corpus (official layout)                  | writes under --out         |
|------|--------------------|-------------------------------------------|----------------------------|
| pr   | librispeech        | LibriSpeech + word->ARPAbet lexicon(s)    | phoneme.txt (checks words) |
| asr  | librispeech        | LibriSpeech                               | len_for_bucket/<split>.csv, char.dict |
| ks   | speech_commands    | Speech Commands v0.01 + its test set      | (checks only)              |
| ic   | fluent_commands    | Fluent Speech Commands                    | (checks only)              |
| sf   | snips              | Audio SNIPS (SUPERB's preprocessed wavs)  | character.txt              |
| sid  | voxceleb1          | VoxCeleb1 + iden_split.txt                | iden_split.txt (+ S3PRL's file lists in our cache) |
| asv  | voxceleb1          | VoxCeleb1 + veri_test2.txt trials         | veri_test2.txt             |
| er   | iemocap            | IEMOCAP_full_release                      | Session<k>/{train,test}_meta_data.json |
| qbe  | quesst14           | quesst14Database                          | (checks only)              |
| sd   | diarization        | Kaldi-style dirs (LibriMix's prepare_diarization.py) | <split>/ copies + reco2dur, spk2utt |
"""

from __future__ import annotations

from s3prl_distill.superb.prepare.common import PrepareError
from s3prl_distill.superb.prepare.diarization import prepare_sd
from s3prl_distill.superb.prepare.fluent_commands import check_ic
from s3prl_distill.superb.prepare.iemocap import prepare_er
from s3prl_distill.superb.prepare.librispeech import (
    ASR_SYMBOLS,
    LIBRISPEECH_SPLITS,
    librispeech_transcripts,
    prepare_asr,
    prepare_pr,
)
from s3prl_distill.superb.prepare.quesst14 import check_qbe
from s3prl_distill.superb.prepare.snips import prepare_sf
from s3prl_distill.superb.prepare.speech_commands import check_ks
from s3prl_distill.superb.prepare.voxceleb1 import prepare_asv, prepare_sid

__all__ = [
    "PrepareError", "prepare_pr", "prepare_asr", "check_ks", "check_ic", "prepare_sf",
    "prepare_sid", "prepare_asv", "prepare_er", "check_qbe", "prepare_sd",
    "librispeech_transcripts", "LIBRISPEECH_SPLITS", "ASR_SYMBOLS",
]
