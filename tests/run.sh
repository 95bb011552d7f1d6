#!/usr/bin/env bash
# The project's test command: fetch the model (once), run every test on the real model, build
# the browser packages and run them in headless Chromium and on the edge runtimes
# (tests/browser/setup.sh installs what Chromium needs besides Debian's chromium;
# tests/gateway/setup.sh the openai SDK; www/edge/setup.sh Deno and workerd from npm).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo run --release --bin stream-aligner -- fetch
bash tests/gateway/setup.sh
cargo test --release --workspace
bash www/build.sh
bash www/build.sh cpu
bash www/build.sh threads
bash www/extension/build.sh
[ -d tests/browser/node_modules ] || bash tests/browser/setup.sh
bash www/edge/setup.sh
target="${CARGO_TARGET_DIR:-target}"
STREAM_ALIGNER_BIN="$target/release/stream-aligner" node --test tests/browser/
