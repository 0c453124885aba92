#!/usr/bin/env bash
# SUPERB SD (speaker diarization) on Libri2Mix two-speaker mixtures.
#
#   SD_DATA=/data/diarization \   # Kaldi-style train/ dev/ test/ (wav.scp, segments, utt2spk,
#                                 # rttm) as LibriMix's scripts/prepare_diarization.py writes them
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/sd/run.sh
#
# The label frame shift follows the upstream's true downsample rate (stored in the checkpoint).
# Predictions: $EXP_ROOT/<name>/scoring/predictions/*.h5 (s3prl-distill submit --sd); DER is
# scored with dscore against test/rttm (not needed for the leaderboard).
source "$(dirname "$0")/../common.sh"
need_dir SD_DATA
EXP="$EXP_ROOT/${EXP_NAME:-sd_$UPSTREAM}"
PREP="$EXP_ROOT/data/sd"
"$PYTHON" -m s3prl_distill.superb.prepare sd --source "$SD_DATA" --out "$PREP"
train_then_test "$EXP" diarization "$RECIPES/sd/config.yaml" "$(join_overrides \
  "config.downstream_expert.loaderrc.train_dir=$PREP/train" \
  "config.downstream_expert.loaderrc.dev_dir=$PREP/dev" \
  "config.downstream_expert.loaderrc.test_dir=$PREP/test")" test
