#!/usr/bin/env bash
# The project's test command (README): the headless suite on CPU. On a fresh machine it first creates .venv and
# installs what the tests need (torch==2.13.0, the project and its `test` extra); afterwards it only runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -f .venv/bin/activate ] || python3 -m venv .venv
  . .venv/bin/activate
fi
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet torch==2.13.0
fi
if ! python -c "import pytest, slicer, slicerio, RMAMambaSegmentationLib" 2>/dev/null; then
  python -m pip install --quiet -e ".[test]"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python -m pytest Testing -q "$@"
