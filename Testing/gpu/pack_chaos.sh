#!/usr/bin/env bash
# Build .gpu/chaos_t2spir_<SIZE>.npz, the packed CHAOS T2-SPIR slices that Testing/gpu/train_default.sh trains from
# on a lent GPU machine (which has no SimpleITK and no copy of the volumes). Run it HERE, from anywhere.
#
#   SIZE=256 (default)  input size in pixels (the default weights' size)
#   DATA=../shared/data/chaos_mr_t2spir (default, beside the repository)
#   ALL=1               all 16 subjects in training; validation is then the split file's 3 validation subjects
#                       (02, 20, 36) again, which the trainer needs: a monitor of the fit, no held-out score.
#                       Default: the project's split, models/chaos_t2spir_split.json (13 train, 3 valid).
#   OUT_FILE            default .gpu/chaos_t2spir_<SIZE>.npz
#
# The file is float16 images + uint8 masks, compressed; the script prints its size. .gpu/ is added to
# .git/info/exclude so that the file travels only when a device call names it in carry.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SIZE=${SIZE:-256}
DATA=${DATA:-$ROOT/../shared/data/chaos_mr_t2spir}
[ -d "$DATA" ] && DATA=$(cd "$DATA" && pwd)
SPLIT=RMAMambaSegmentation/RMAMambaSegmentationLib/models/chaos_t2spir_split.json
OUT_FILE=${OUT_FILE:-.gpu/chaos_t2spir_${SIZE}.npz}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export PYTHONPATH="$ROOT/RMAMambaSegmentation${PYTHONPATH:+:$PYTHONPATH}"

if [ ! -d "$DATA/images" ] || [ ! -d "$DATA/liver_masks" ]; then
  echo "pack_chaos.sh: no CHAOS data in $DATA (images/ and liver_masks/ expected); set DATA" >&2
  exit 2
fi
mkdir -p "$(dirname "$OUT_FILE")"
EXCLUDE=$(git rev-parse --git-path info/exclude)
if ! grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null; then
  mkdir -p "$(dirname "$EXCLUDE")"
  echo '/.gpu/' >>"$EXCLUDE"
  echo "pack_chaos.sh: added /.gpu/ to $EXCLUDE"
fi

if [ "${ALL:-0}" = 1 ]; then
  "$PYTHON" - "$DATA" "$SPLIT" "$SIZE" "$OUT_FILE" <<'PY'
import logging
import sys

from RMAMambaSegmentationLib.imaging.intensity import IntensityPreset
from RMAMambaSegmentationLib.training.config import TrainConfig
from RMAMambaSegmentationLib.training.layouts import find_training_data, natural_key
from RMAMambaSegmentationLib.training.packed_slices import pack_training_slices

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
data_dir, split, size, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = find_training_data(data_dir, split_file=split)
data.train = sorted(data.train + data.valid, key=lambda case: natural_key(case.key))
data.split_source = (f"all {len(data.train)} subjects in train; valid = the validation subjects of "
                     f"{split.rsplit('/', 1)[-1]}, also trained on (a monitor, not held out)")
config = TrainConfig(variant="T", input_size=(size, size), intensity=IntensityPreset.from_name("MRI-tissue"))
pack_training_slices(config, data, out)
PY
else
  "$PYTHON" -m RMAMambaSegmentationLib.cli train "$DATA" --split "$SPLIT" --model T --intensity MRI-tissue \
    --input-size "$SIZE" --pack-slices "$OUT_FILE" -o "${TMPDIR:-/tmp}/rmamamba_pack_unused"
fi
ls -l "$OUT_FILE"
"$PYTHON" -c "import os, sys; print(f'{sys.argv[1]}: {os.path.getsize(sys.argv[1]) / 2**20:.1f} MiB')" "$OUT_FILE"
