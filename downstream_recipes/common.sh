#!/usr/bin/env bash
# Shared steps of the SUPERB recipes (sourced by <task>/run.sh). Not meant to be run directly.
#
# Environment (set by the caller):
#   UPSTREAM       S3PRL upstream name, e.g. distilhubert_local, fithubert_local, a name given to
#                  `s3prl-distill register`, or any S3PRL upstream (required)
#   UPSTREAM_CKPT  checkpoint for entries that take one (-k); empty for registered names
#   EXP_ROOT       where experiment folders go (default: result/downstream)
#   EXP_NAME       experiment name prefix (default: <task>_<upstream>)
#   EXTRA_OVERRIDE more S3PRL -o assignments, joined with ",," (e.g. config.optimizer.lr=1.0e-3)
#   PYTHON         python interpreter (default: python)
#   DEVICE         cuda or cpu (default: cuda when torch sees a GPU, else cpu)
set -euo pipefail

RECIPES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
EXP_ROOT="${EXP_ROOT:-result/downstream}"
: "${UPSTREAM:?set UPSTREAM to an S3PRL upstream name (e.g. distilhubert_local)}"

# S3PRL's own runner, through our wrapper when installed (the import hook also makes the plain
# `python -m s3prl.run_downstream` find our upstreams).
DEVICE="${DEVICE:-$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
if "$PYTHON" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('s3prl_distill.run_downstream') is None)"; then
  RUNNER=("$PYTHON" -m s3prl_distill.run_downstream --device "$DEVICE")
else
  RUNNER=("$PYTHON" -m s3prl.run_downstream --device "$DEVICE")
fi

upstream_args() {
  local args=(-u "$UPSTREAM")
  if [ -n "${UPSTREAM_CKPT:-}" ]; then args+=(-k "$UPSTREAM_CKPT"); fi
  printf '%s\n' "${args[@]}"
}

need_dir() {  # need_dir VAR_NAME: the variable must name an existing folder
  local name="$1"
  if [ -z "${!name:-}" ] || [ ! -d "${!name}" ]; then
    echo "error: set $name to the corpus folder (see downstream_recipes/README.md)" >&2
    exit 2
  fi
}

join_overrides() {  # join_overrides A B ... -> "A,,B,,..." (+ EXTRA_OVERRIDE)
  local out="" item
  for item in "$@" ${EXTRA_OVERRIDE:+"$EXTRA_OVERRIDE"}; do
    out="${out:+$out,,}$item"
  done
  printf '%s' "$out"
}

# train_then_test EXPDIR DOWNSTREAM CONFIG OVERRIDES TEST_SPLIT
#   trains (resuming if EXPDIR has checkpoints), then evaluates the best-on-dev checkpoint on
#   TEST_SPLIT; S3PRL writes the prediction files into EXPDIR, the log goes to EXPDIR/test.result
train_then_test() {
  local expdir="$1" downstream="$2" config="$3" overrides="$4" split="$5"
  mapfile -t up < <(upstream_args)
  mkdir -p "$expdir"
  "${RUNNER[@]}" -m train -a "${up[@]}" -d "$downstream" -c "$config" -p "$expdir" -o "$overrides"
  local ckpt
  ckpt="$("$PYTHON" -m s3prl_distill.superb.expdir best-dev "$expdir")"
  echo "evaluating $ckpt on $split"
  "${RUNNER[@]}" -m evaluate -e "$ckpt" -t "$split" | tee "$expdir/test.result"
}
