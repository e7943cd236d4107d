#!/usr/bin/env bash
# Train the default RMA-Mamba-T weights on a lent GPU machine from the packed CHAOS slices
# (.gpu/chaos_t2spir_256.npz, made here by Testing/gpu/pack_chaos.sh; the device has no SimpleITK), then time
# T, S and SRMA with `rmamamba benchmark` if time is left. Run from the repository root; see Testing/gpu/README.md.
#
# The whole script ends within TIME_BUDGET seconds: training runs under `timeout` and whatever last.pt exists
# when it stops is kept. Files in $OUT (8 at most come back from the device):
#   train.log             this script's output (settings, training log, sha256 of the float16 last.pt)
#   log.csv               one row per epoch
#   last.json             the model card of last.pt (its training.settings and training.data are config.json)
#   config.json           only when there is no last.json (training stopped before its first epoch ended)
#   last.pt.part-aa..ad   last.pt stored as float16 (like the shipped weights), `split -n 4`: each under 16 MiB
#   benchmark.txt         `rmamamba benchmark` rows (T, S, SRMA; no sequential-scan reference rows)
#
# Settings (environment variables, defaults in brackets): EPOCHS [60], LR [5e-4], WARMUP [3] epochs, MIN_LR [1e-6]
# (cosine), GRAD_CLIP [5], EMA [0.998], BATCH [16], TEACHER [the shipped U-Net], KD_WEIGHT [1], GUIDE_WEIGHT [1],
# GUIDE_EPOCHS [30% of EPOCHS], AMP [bf16], SELECT_BY [volume], SEED [42], PACK [.gpu/chaos_t2spir_256.npz],
# INPUT_SIZE [256], DEVICE [cuda], TIME_BUDGET [480] s, RESERVE [45] s kept after training (copying, benchmark),
# RUN_DIR [/tmp/run], OUT [/tmp/gpu_out when unset], PYTHON [python3], EXTRA_ARGS [] more `train` options.
# DRY_RUN=1: --device cpu --max-steps 2, no GPU check, benchmark on the CPU at 64 px (checks the file handling).
set -uo pipefail

START=$SECONDS
TIME_BUDGET=${TIME_BUDGET:-480}
OUT=${OUT:-/tmp/gpu_out}
DRY_RUN=${DRY_RUN:-0}
EPOCHS=${EPOCHS:-60}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-3}
MIN_LR=${MIN_LR:-1e-6}
GRAD_CLIP=${GRAD_CLIP:-5}
EMA=${EMA:-0.998}
BATCH=${BATCH:-16}
TEACHER=${TEACHER:-RMAMambaSegmentation/RMAMambaSegmentationLib/models/unet_chaos_t2spir.pt}
KD_WEIGHT=${KD_WEIGHT:-1}
GUIDE_WEIGHT=${GUIDE_WEIGHT:-1}
GUIDE_EPOCHS=${GUIDE_EPOCHS:-$(( (EPOCHS * 3 + 5) / 10 ))}
AMP=${AMP:-bf16}
SELECT_BY=${SELECT_BY:-volume}
SEED=${SEED:-42}
PACK=${PACK:-.gpu/chaos_t2spir_256.npz}
INPUT_SIZE=${INPUT_SIZE:-256}
DEVICE=${DEVICE:-cuda}
RESERVE=${RESERVE:-45}
RUN_DIR=${RUN_DIR:-/tmp/run}
PYTHON=${PYTHON:-python3}
EXTRA_ARGS=${EXTRA_ARGS:-}
BENCH_SIZE=256
LIMIT_ARGS=()
if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu AMP=off BENCH_SIZE=64
  LIMIT_ARGS=(--max-steps 2 --valid-max-slices 4)
fi
export PYTHONPATH="RMAMambaSegmentation${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

left() { echo $(( TIME_BUDGET - (SECONDS - START) )); }

check_device() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: CPU, 2 steps"
    return 0
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed"
  "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))" || return 1
}

train() {
  local limit=$(( $(left) - RESERVE ))
  if [ "$limit" -lt 30 ]; then
    echo "only $(left) s left: no time to train"
    return 1
  fi
  rm -rf "$RUN_DIR"
  local args=(train "$PACK" -o "$RUN_DIR" --model T --intensity MRI-tissue --input-size "$INPUT_SIZE"
    --device "$DEVICE" --amp "$AMP" --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --optimizer adamw
    --schedule cosine --warmup-epochs "$WARMUP" --min-lr "$MIN_LR" --grad-clip "$GRAD_CLIP" --ema "$EMA"
    --teacher "$TEACHER" --kd-weight "$KD_WEIGHT" --guide-weight "$GUIDE_WEIGHT" --guide-epochs "$GUIDE_EPOCHS"
    --select-by "$SELECT_BY" --seed "$SEED" --no-progress "${LIMIT_ARGS[@]}")
  # shellcheck disable=SC2206
  args+=($EXTRA_ARGS)
  echo "training for at most $limit s: $PYTHON -m RMAMambaSegmentationLib.cli ${args[*]}"
  timeout --signal=TERM --kill-after=10 "$limit" "$PYTHON" -m RMAMambaSegmentationLib.cli "${args[@]}"
  local status=$?
  [ "$status" = 124 ] && echo "training stopped at the time limit ($limit s): keeping the last finished epoch"
  echo "training exit status $status after $(( SECONDS - START )) s"
  return 0
}

collect() {
  [ -f "$RUN_DIR/log.csv" ] && cp "$RUN_DIR/log.csv" "$OUT/"
  if [ -f "$RUN_DIR/config.json" ]; then
    echo "--- config.json"
    cat "$RUN_DIR/config.json"
  fi
  if [ -f "$RUN_DIR/last.json" ]; then
    cp "$RUN_DIR/last.json" "$OUT/"
  elif [ -f "$RUN_DIR/config.json" ]; then
    cp "$RUN_DIR/config.json" "$OUT/"
  fi
  if [ ! -f "$RUN_DIR/last.pt" ]; then
    echo "no last.pt: no epoch finished"
    return 0
  fi
  "$PYTHON" -c "
import sys
import torch
from RMAMambaSegmentationLib.weights.checkpoints import save_checkpoint
state = torch.load(sys.argv[1], map_location='cpu', weights_only=True)
save_checkpoint(sys.argv[2], state, half=True)" "$RUN_DIR/last.pt" "$RUN_DIR/last_half.pt" || return 1
  echo "last.pt as float16: $(sha256sum "$RUN_DIR/last_half.pt" | cut -d' ' -f1) $(stat -c %s "$RUN_DIR/last_half.pt") bytes"
  (cd "$OUT" && split -n 4 "$RUN_DIR/last_half.pt" last.pt.part-)
  ls -l "$OUT"
}

benchmark() {
  local variant budget
  for variant in T S SRMA; do
    budget=$(( $(left) - 5 ))
    if [ "$budget" -lt 20 ]; then
      echo "benchmark: $(left) s left, $variant and later skipped" | tee -a "$OUT/benchmark.txt"
      return 0
    fi
    echo "--- rmamamba benchmark --variants $variant (at most $budget s)" | tee -a "$OUT/benchmark.txt"
    local window=()
    [ "$DRY_RUN" = 1 ] && window=(--window 32 32 16)
    timeout --kill-after=5 "$budget" "$PYTHON" -m RMAMambaSegmentationLib.cli benchmark --variants "$variant" \
      --device "$DEVICE" --no-reference --batch 1 8 --size "$BENCH_SIZE" "${window[@]}" >>"$OUT/benchmark.txt"
    echo "benchmark $variant: exit status $?"
  done
}

main() {
  echo "train_default.sh: budget $TIME_BUDGET s, output $OUT, pack $PACK"
  if [ ! -f "$PACK" ]; then
    echo "no $PACK: make it with Testing/gpu/pack_chaos.sh and name .gpu in carry"
    return 2
  fi
  check_device || return 3
  train
  collect || echo "collecting the weights failed"
  benchmark
  echo "done after $(( SECONDS - START )) s; files in $OUT: $(find "$OUT" -maxdepth 1 -type f | wc -l)"
}

mkdir -p "$OUT"
main 2>&1 | tee "$OUT/train.log"
exit "${PIPESTATUS[0]}"
