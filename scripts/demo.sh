#!/usr/bin/env bash
# The main job, from a fresh clone: install, then speculative generation with a
# bounded (StreamingLLM) cache on the bundled default models, printing
# tokens/s, acceptance and memory. Extra arguments go to `specstream generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v gcc >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq build-essential python3-dev python3-pip
fi
"$PY" -m pip install -q --disable-pip-version-check -e .
exec "$PY" -m specstream generate --policy streaming --n-sink 4 --window 252 --k 4 \
    --prompt "It was a bright cold day in April, and" --max-new-tokens 128 --temperature 0.8 --top-p 0.95 \
    --seed 0 --measure-speedup "$@"
