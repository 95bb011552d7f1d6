#!/usr/bin/env bash
# The gateway tests' real clients besides curl: the official openai Python SDK, in a venv of its own
# (STREAM_ALIGNER_PYTHON points the tests at another interpreter that has it).
set -euo pipefail
venv="${STREAM_ALIGNER_VENV:-$HOME/.cache/stream-aligner/venv}"
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "openai==3.54.0"
fi
