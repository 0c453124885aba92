#!/usr/bin/env bash
# SUPERB ASV (speaker verification) on VoxCeleb1: train on dev, test on the official trials.
# No dev set: every saved checkpoint is evaluated on test and the best EER is reported.
#
#   VOXCELEB1=/data/VoxCeleb1 TRIALS=/data/veri_test2.txt \
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/asv/run.sh
#
# S3PRL's training-length cache is kept per corpus under $XDG_CACHE_HOME/s3prl_distill/superb/
# (s3prl_distill.superb.s3prl_caches), never inside S3PRL's package.
# Predictions: $EXP_ROOT/<name>/test_predict.txt of the best checkpoint (submit --asv).
source "$(dirname "$0")/../common.sh"
need_dir VOXCELEB1
: "${TRIALS:?set TRIALS to the VoxCeleb1 trial list (veri_test2.txt)}"
EXP="$EXP_ROOT/${EXP_NAME:-asv_$UPSTREAM}"
PREP="$EXP_ROOT/data/asv"
"$PYTHON" -m s3prl_distill.superb.prepare asv --voxceleb1 "$VOXCELEB1" --trials "$TRIALS" --out "$PREP"
mapfile -t up < <(upstream_args)
"${RUNNER[@]}" -m train -a "${up[@]}" -d sv_voxceleb1 -c "$RECIPES/asv/config.yaml" -p "$EXP" \
  -o "$(join_overrides "config.downstream_expert.datarc.file_path=$VOXCELEB1" \
    "config.downstream_expert.datarc.train_meta_data=$PREP/veri_test2.txt" \
    "config.downstream_expert.datarc.dev_meta_data=$PREP/veri_test2.txt" \
    "config.downstream_expert.datarc.test_meta_data=$PREP/veri_test2.txt")"
"$PYTHON" -m s3prl_distill.superb.asv_sweep "$EXP" --voxceleb1 "$VOXCELEB1" --device "$DEVICE"
