#!/usr/bin/env bash
# The project's test command: fetch the model (once), run every test on the real model, and
# check that the library builds for the browser (wasm32).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo run --release --bin stream-aligner -- fetch
cargo test --release --workspace
cargo build --release --lib --target wasm32-unknown-unknown --no-default-features -p stream-aligner
echo "wasm32 build: ok"
