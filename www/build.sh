#!/usr/bin/env bash
# Builds a browser package (www/pkg, or www/pkg-cpu with `cpu`) with wasm-pack: the library for wasm32, wasm-bindgen's
# ES module and TypeScript types, and an npm package.json (--target web). Then drops the wasm
# "name" section (function names for stack traces: 6 MB of the 35). Needs `rustup target add
# wasm32-unknown-unknown`, wasm-pack and wasm-bindgen-cli at the version in Cargo.lock
# (tests/browser/setup.sh installs them; wasm-opt is off, see crate/Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
# Two packages from one source: `webgpu` (the default, www/pkg: WebGPU with the CPU as fallback)
# and `cpu` (www/pkg-cpu: no wgpu or cubecl compiled in; edge runtimes and extensions).
variant="${1:-webgpu}"
case "$variant" in
  webgpu) out=www/pkg features="--features wgpu" ;;
  cpu) out=www/pkg-cpu features="" ;;
  *) echo "usage: build.sh [webgpu|cpu]" >&2; exit 2 ;;
esac
wasm-pack build crate --release --target web --out-dir "../$out" --out-name stream_aligner \
  -- --no-default-features $features
python3 - "$out/stream_aligner_bg.wasm" <<'PY'
import sys
path = sys.argv[1]; data = open(path, 'rb').read()
def leb(i):
    r = s = 0
    while True:
        b = data[i]; i += 1; r |= (b & 0x7f) << s; s += 7
        if b < 0x80: return r, i
out, i = bytearray(data[:8]), 8
while i < len(data):
    start = i; sid = data[i]; size, body = leb(i + 1); i = body + size
    if sid == 0:
        n, j = leb(body)
        if data[j:j + n] == b'name': continue
    out += data[start:i]
open(path, 'wb').write(out)
PY
raw=$(stat -c %s "$out/stream_aligner_bg.wasm")
gz=$(gzip -9 -c "$out/stream_aligner_bg.wasm" | wc -c)
echo "$out: stream_aligner_bg.wasm $raw bytes ($gz gzip)"
