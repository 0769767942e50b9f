#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs memrec-infer with its train, test and bench extras.
# torch is pinned to 2.13.0 first: that CPU wheel is what this project is tested with, and any
# looser spec would pull a multi-GB CUDA build. The engine itself never imports torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[train,test,bench]"
