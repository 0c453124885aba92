#!/usr/bin/env bash
# SUPERB IC (intent classification) on Fluent Speech Commands.
#
#   FSC_ROOT=/data/fluent_speech_commands_dataset \   # holds data/*.csv and wavs/speakers/
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/ic/run.sh
#
# Predictions: $EXP_ROOT/<name>/test_predict.csv (s3prl-distill submit --ic).
source "$(dirname "$0")/../common.sh"
need_dir FSC_ROOT
EXP="$EXP_ROOT/${EXP_NAME:-ic_$UPSTREAM}"
"$PYTHON" -m s3prl_distill.superb.prepare ic --root "$FSC_ROOT"
train_then_test "$EXP" fluent_commands "$RECIPES/ic/config.yaml" "$(join_overrides \
  "config.downstream_expert.datarc.file_path=$FSC_ROOT")" test
