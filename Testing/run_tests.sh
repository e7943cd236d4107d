#!/usr/bin/env bash
# The project's test command (README): the headless suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest Testing -q "$@"
