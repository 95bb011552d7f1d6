#!/usr/bin/env bash
# What the browser build and tests need besides Debian's chromium: wasm-pack, wasm-bindgen-cli
# at the version in Cargo.lock (no --locked: it wants a webpki-roots this registry lacks) and playwright-core
# from npm (a driver only: it never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/../.."
want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$want" ]; then
  cargo install wasm-bindgen-cli --version "$want"
fi
command -v wasm-pack >/dev/null || cargo install wasm-pack
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd tests/browser && npm ci --no-audit --no-fund)
