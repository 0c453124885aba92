#!/usr/bin/env bash
# SUPERB SF (slot filling) on Audio SNIPS (SUPERB's preprocessed 16 kHz wav copy).
#
#   SNIPS_ROOT=/data/SNIPS \   # holds train/ valid/ test/, all.iob.snips.txt, slots.txt
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/sf/run.sh
#
# Predictions: $EXP_ROOT/<name>/test-hyp.ark (s3prl-distill submit --sf).
source "$(dirname "$0")/../common.sh"
need_dir SNIPS_ROOT
EXP="$EXP_ROOT/${EXP_NAME:-sf_$UPSTREAM}"
PREP="$EXP_ROOT/data/sf"
"$PYTHON" -m s3prl_distill.superb.prepare sf --root "$SNIPS_ROOT" --out "$PREP" \
  --train-speakers Ivy Joanna Joey Justin Kendra Kimberly Matthew Salli \
  --valid-speakers Aditi Amy Geraint Nicole --test-speakers Brian Emma Raveena Russell
train_then_test "$EXP" ctc "$RECIPES/sf/config.yaml" "$(join_overrides \
  "config.downstream_expert.corpus.path=$SNIPS_ROOT" \
  "config.downstream_expert.text.vocab_file=$PREP/character.txt" \
  "config.downstream_expert.text.slots_file=$SNIPS_ROOT/slots.txt")" test
