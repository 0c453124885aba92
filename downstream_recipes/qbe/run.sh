#!/usr/bin/env bash
# SUPERB QbE (query-by-example STD) on QUESST 2014: DTW on every hidden layer (no training).
#
#   QUESST14=/data/quesst14Database NUM_LAYERS=3 \   # NUM_LAYERS = len(hidden_states) of the upstream
#   UPSTREAM=distilhubert_local UPSTREAM_CKPT=/ckpt/x.ckpt bash downstream_recipes/qbe/run.sh
#
# 1. every layer on dev -> $EXP_ROOT/<name>_<layer>_dev/benchmark.stdlist.xml
# 2. scored with QUESST's own scorer (scoring/score-TWV-Cnxe.sh, ships with the corpus); the layer
#    with the highest maxTWV on dev is chosen (set BEST_LAYER to skip scoring and choose yourself)
# 3. that layer on eval -> $EXP_ROOT/<name>_<layer>_test (s3prl-distill submit --qbe)
source "$(dirname "$0")/../common.sh"
need_dir QUESST14
: "${NUM_LAYERS:?set NUM_LAYERS to the number of hidden states the upstream returns}"
NAME="${EXP_NAME:-qbe_$UPSTREAM}"
"$PYTHON" -m s3prl_distill.superb.prepare qbe --root "$QUESST14"
mapfile -t up < <(upstream_args)
OVR="$(join_overrides "config.downstream_expert.datarc.dataset_root=$QUESST14")"
qbe_eval() {  # qbe_eval LAYER dev|test
  local exp="$EXP_ROOT/${NAME}_$1_$2"
  if [ ! -f "$exp/benchmark.stdlist.xml" ]; then
    "${RUNNER[@]}" -m evaluate -t "$2" "${up[@]}" -l "$1" -d quesst14_dtw \
      -c "$RECIPES/qbe/config.yaml" -p "$exp" -o "$OVR"
  fi
}
best="${BEST_LAYER:-}"
if [ -z "$best" ]; then
  best_twv=-1e9
  for layer in $(seq 0 $((NUM_LAYERS - 1))); do
    qbe_eval "$layer" dev
    exp="$(cd "$EXP_ROOT/${NAME}_${layer}_dev" && pwd)"
    if [ ! -f "$exp/score.out" ]; then  # QUESST's scorer writes score.out into the system folder
      (cd "$QUESST14/scoring" && ./score-TWV-Cnxe.sh "$exp" groundtruth_quesst14_dev -10) \
        > "$exp/score.log" 2>&1 || echo "warning: scoring layer $layer failed, see $exp/score.log" >&2
    fi
    twv="$("$PYTHON" -m s3prl_distill.superb.expdir qbe-mtwv "$exp" 2>/dev/null || true)"
    echo "layer $layer: dev maxTWV ${twv:-unscored}"
    if [ -n "$twv" ] && awk "BEGIN{exit !($twv > $best_twv)}"; then best="$layer"; best_twv="$twv"; fi
  done
  if [ -z "$best" ]; then
    echo "error: no dev maxTWV could be read (is the QUESST scorer runnable?); set BEST_LAYER" >&2
    exit 1
  fi
fi
echo "best layer on dev: $best"
qbe_eval "$best" test
echo "submit: s3prl-distill submit --qbe $EXP_ROOT/${NAME}_${best}_test ..."
