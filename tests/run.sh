#!/usr/bin/env bash
# The project's test command: fetch the model (once), run every test on the real model, build
# the browser package and run it in headless Chromium (tests/browser/setup.sh installs what
# that needs besides Debian's chromium; tests/gateway/setup.sh, the openai SDK the gateway tests use).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo run --release --bin stream-aligner -- fetch
bash tests/gateway/setup.sh
cargo test --release --workspace
bash www/build.sh
[ -d tests/browser/node_modules ] || bash tests/browser/setup.sh
target="${CARGO_TARGET_DIR:-target}"
STREAM_ALIGNER_BIN="$target/release/stream-aligner" node --test tests/browser/
