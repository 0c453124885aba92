#!/usr/bin/env bash
# SUPERB SID (speaker identification) on VoxCeleb1 with the official identification split.
#
#   VOXCELEB1=/data/VoxCeleb1 \       # holds dev/wav/id1XXXX/... and test/wav/id1XXXX/...
#   IDEN_SPLIT=/data/iden_split.txt \ # official split: '<1|2|3> idXXXXX/<video>/<n>.wav'
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/sid/run.sh
#
# Preparation rewrites S3PRL's cached file lists (s3prl/downstream/voxceleb1/.cache/*.pkl) for this
# corpus: run one SID experiment per VoxCeleb1 copy at a time.
# Predictions: $EXP_ROOT/<name>/test_predict.txt (s3prl-distill submit --sid).
source "$(dirname "$0")/../common.sh"
need_dir VOXCELEB1
: "${IDEN_SPLIT:?set IDEN_SPLIT to the VoxCeleb1 iden_split.txt}"
EXP="$EXP_ROOT/${EXP_NAME:-sid_$UPSTREAM}"
PREP="$EXP_ROOT/data/sid"
"$PYTHON" -m s3prl_distill.superb.prepare sid --voxceleb1 "$VOXCELEB1" --split-file "$IDEN_SPLIT" --out "$PREP"
train_then_test "$EXP" voxceleb1 "$RECIPES/sid/config.yaml" "$(join_overrides \
  "config.downstream_expert.datarc.file_path=$VOXCELEB1" \
  "config.downstream_expert.datarc.meta_data=$PREP/iden_split.txt")" test
