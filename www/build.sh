#!/usr/bin/env bash
# Builds a wasm package with wasm-pack: the library for wasm32, wasm-bindgen's ES module and
# TypeScript types (--target web). `bash www/build.sh [webgpu|cpu]`: the profiles, their
# output folders, features and wasm-opt arguments are in the top-level wasm-pack.toml. Needs
# `rustup target add wasm32-unknown-unknown`, wasm-pack and wasm-bindgen-cli at the version in
# Cargo.lock (tests/browser/setup.sh installs them) and node (binaryen's wasm-opt comes from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-webgpu}"
IFS=$'\t' read -r out features opt toolchain rustflags buildstd < <(python3 - "$variant" <<'PY'
import sys, tomllib
profiles = tomllib.load(open("wasm-pack.toml", "rb"))["profile"]
name = sys.argv[1]
if name not in profiles:
    sys.exit(f"no profile '{name}' in wasm-pack.toml (have: {', '.join(profiles)})")
p = profiles[name]
print("\t".join([p["out-dir"], ",".join(p.get("features", [])) or "-", " ".join(p.get("wasm-opt", [])) or "-",
                 p.get("toolchain", "-"), "\x1f".join(p.get("rustflags", [])) or "-", ",".join(p.get("build-std", [])) or "-"]))
PY
)
args=(--no-default-features)
[ "$features" != "-" ] && args+=(--features "$features")
env=()
if [ "$toolchain" != "-" ]; then
  env+=(RUSTUP_TOOLCHAIN="$toolchain")
  # Another compiler and other flags: its own target folder, so the other builds stay incremental.
  env+=(CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/$variant")
fi
[ "$rustflags" != "-" ] && env+=(CARGO_ENCODED_RUSTFLAGS="$rustflags")
[ "$buildstd" != "-" ] && args+=(-Z "build-std=$buildstd")
env "${env[@]}" wasm-pack build crate --release --target web --out-dir "../$out" --out-name stream_aligner -- "${args[@]}"
wasm="$out/stream_aligner_bg.wasm"
before=$(stat -c %s "$wasm")
if [ "$opt" != "-" ]; then
  [ -x www/node_modules/.bin/wasm-opt ] || (cd www && npm ci --no-audit --no-fund)
  # shellcheck disable=SC2086
  www/node_modules/.bin/wasm-opt $opt "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
fi
raw=$(stat -c %s "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
echo "$out: stream_aligner_bg.wasm $raw bytes ($gz gzip); wasm-opt ($opt) took it from $before"
