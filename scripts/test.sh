#!/usr/bin/env bash
# Install (idempotent) and run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
exec python -m pytest -q -p no:cacheprovider tests "$@"
