#!/usr/bin/env bash
# SUPERB KS (keyword spotting) on Speech Commands v0.01 (12 classes) and its separate test set.
#
#   KS_TRAIN=/data/speech_commands_v0.01 KS_TEST=/data/speech_commands_test_set_v0.01 \
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/ks/run.sh
#
# Predictions: $EXP_ROOT/<name>/test_predict.txt (s3prl-distill submit --ks).
source "$(dirname "$0")/../common.sh"
need_dir KS_TRAIN
need_dir KS_TEST
EXP="$EXP_ROOT/${EXP_NAME:-ks_$UPSTREAM}"
"$PYTHON" -m s3prl_distill.superb.prepare ks --train "$KS_TRAIN" --test "$KS_TEST"
train_then_test "$EXP" speech_commands "$RECIPES/ks/config.yaml" "$(join_overrides \
  "config.downstream_expert.datarc.speech_commands_root=$KS_TRAIN" \
  "config.downstream_expert.datarc.speech_commands_test_root=$KS_TEST")" test
