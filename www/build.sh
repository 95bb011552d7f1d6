#!/usr/bin/env bash
# Builds the browser package into www/pkg: the library for wasm32, then wasm-bindgen's ES module
# and TypeScript types (--target web). Needs `rustup target add wasm32-unknown-unknown` and
# wasm-bindgen-cli at the version in Cargo.lock (tests/browser/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --lib --target wasm32-unknown-unknown --no-default-features -p stream-aligner
target="${CARGO_TARGET_DIR:-target}"
wasm-bindgen --target web --remove-name-section --out-dir www/pkg "$target/wasm32-unknown-unknown/release/stream_aligner.wasm"
raw=$(stat -c %s www/pkg/stream_aligner_bg.wasm)
gz=$(gzip -9 -c www/pkg/stream_aligner_bg.wasm | wc -c)
echo "www/pkg: stream_aligner_bg.wasm $raw bytes ($gz gzip)"
