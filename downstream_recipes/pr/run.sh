#!/usr/bin/env bash
# SUPERB PR (phoneme recognition) on LibriSpeech train-clean-100 / dev-clean / test-clean.
#
#   LIBRISPEECH=/data/LibriSpeech \                # holds train-clean-100/ dev-clean/ test-clean/
#   LEXICON="/data/librispeech-lexicon.txt" \      # WORD PH1 PH2 ... (ARPAbet with stress);
#                                                  # several files: space-separated, first wins
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/distilhubert.ckpt \
#   bash downstream_recipes/pr/run.sh
#
# Predictions for the leaderboard: $EXP_ROOT/<name>/test-hyp.ark (s3prl-distill submit --pr).
source "$(dirname "$0")/../common.sh"
need_dir LIBRISPEECH
: "${LEXICON:?set LEXICON to the word->phone lexicon file(s)}"
EXP="$EXP_ROOT/${EXP_NAME:-pr_$UPSTREAM}"
PREP="$EXP_ROOT/data/pr"
read -r -a lexicons <<< "$LEXICON"
"$PYTHON" -m s3prl_distill.superb.prepare pr --librispeech "$LIBRISPEECH" --lexicon "${lexicons[@]}" --out "$PREP"
lex_list="[$(printf "'%s'," "${lexicons[@]}" | sed 's/,$//')]"
train_then_test "$EXP" ctc "$RECIPES/pr/config.yaml" "$(join_overrides \
  "config.downstream_expert.corpus.path=$LIBRISPEECH" \
  "config.downstream_expert.corpus.lexicon=$lex_list" \
  "config.downstream_expert.text.vocab_file=$PREP/phoneme.txt")" test
