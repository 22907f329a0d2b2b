#!/usr/bin/env bash
# Install (idempotent), generate sample videos and ingest them on a local Ray into datasets/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
exec longvid demo --out "${1:-datasets/demo}"
