#!/usr/bin/env bash
# SUPERB ASR on LibriSpeech train-clean-100 / dev-clean / test-clean (greedy CTC, no LM).
#
#   LIBRISPEECH=/data/LibriSpeech UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt \
#   bash downstream_recipes/asr/run.sh
#
# Predictions: $EXP_ROOT/<name>/test-clean-noLM-hyp.ark (s3prl-distill submit --asr). With-LM
# decoding (asr_lm) needs flashlight's python bindings and KenLM: see downstream_recipes/README.md.
source "$(dirname "$0")/../common.sh"
need_dir LIBRISPEECH
EXP="$EXP_ROOT/${EXP_NAME:-asr_$UPSTREAM}"
PREP="$EXP_ROOT/data/asr"
"$PYTHON" -m s3prl_distill.superb.prepare asr --librispeech "$LIBRISPEECH" --out "$PREP"
train_then_test "$EXP" asr "$RECIPES/asr/config.yaml" "$(join_overrides \
  "config.downstream_expert.datarc.libri_root=$LIBRISPEECH" \
  "config.downstream_expert.datarc.bucket_file=$PREP/len_for_bucket" \
  "config.downstream_expert.datarc.dict_path=$PREP/char.dict")" test-clean
