#!/usr/bin/env bash
# SUPERB ER (emotion recognition) on IEMOCAP: five folds, each testing on one session.
#
#   IEMOCAP=/data/IEMOCAP_full_release \   # holds Session1..Session5
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/er/run.sh
#   FOLDS="fold1 fold2" ... to run some folds only (the leaderboard scores ER with all five).
#
# Predictions: $EXP_ROOT/<name>_fold<k>/test_fold<k>_predict.txt
# (s3prl-distill submit --er_fold1 DIR1 ... --er_fold5 DIR5); the mean accuracy is printed.
source "$(dirname "$0")/../common.sh"
need_dir IEMOCAP
PREP="$EXP_ROOT/data/er/meta_data"
"$PYTHON" -m s3prl_distill.superb.prepare er --iemocap "$IEMOCAP" --out "$PREP"
for fold in ${FOLDS:-fold1 fold2 fold3 fold4 fold5}; do
  train_then_test "$EXP_ROOT/${EXP_NAME:-er_$UPSTREAM}_$fold" emotion "$RECIPES/er/config.yaml" \
    "$(join_overrides "config.downstream_expert.datarc.root=$IEMOCAP" \
      "config.downstream_expert.datarc.meta_data=$PREP" \
      "config.downstream_expert.datarc.test_fold=$fold")" test
done
grep -h "test acc" "$EXP_ROOT/${EXP_NAME:-er_$UPSTREAM}"_fold*/test.result \
  | awk '{s += $NF; n += 1} END {if (n) printf "ER mean test accuracy over %d folds: %.4f\n", n, s / n}'
