#!/usr/bin/env bash
# npm packages of the JavaScript API, the way a web developer installs them:
#   bash www/pack.sh [webgpu|cpu]  → target/npm/stream-aligner{,-cpu}-VERSION.tgz
# webgpu packs www/pkg (WebGPU, CPU fallback); cpu packs www/pkg-cpu (no wgpu or cubecl) as the
# package's pkg/, under the name stream-aligner-cpu. Build the wasm first (www/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${1:-webgpu}"
case "$variant" in
  webgpu) name=stream-aligner pkg=www/pkg ;;
  cpu) name=stream-aligner-cpu pkg=www/pkg-cpu ;;
  *) echo "usage: pack.sh [webgpu|cpu]" >&2; exit 2 ;;
esac
[ -f "$pkg/stream_aligner_bg.wasm" ] || { echo "no $pkg: run bash www/build.sh $variant" >&2; exit 1; }
stage="target/npm/$variant"
rm -rf "$stage"
mkdir -p "$stage/pkg"
cp www/stream-aligner.js www/stream-aligner.d.ts www/stream-aligner-worker.js www/stream-aligner-worker.d.ts www/worker.js "$stage/"
cp "$pkg/stream_aligner.js" "$pkg/stream_aligner.d.ts" "$pkg/stream_aligner_bg.wasm" "$stage/pkg/"
# The threads package (cross-origin isolated pages pick it for the CPU), with its worker snippet.
if [ -f www/pkg-threads/stream_aligner_bg.wasm ]; then
  mkdir -p "$stage/pkg-threads"
  cp -r www/pkg-threads/stream_aligner.js www/pkg-threads/stream_aligner.d.ts www/pkg-threads/stream_aligner_bg.wasm \
    www/pkg-threads/snippets "$stage/pkg-threads/"
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' crate/Cargo.toml | head -1)
cat > "$stage/package.json" <<JSON
{
  "name": "$name",
  "version": "$version",
  "description": "Stream Aligner in the browser: a small aligner model corrects each sentence of an LLM's answer as it streams (wasm$( [ "$variant" = webgpu ] && echo ", WebGPU" ))",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "./stream-aligner.js",
  "types": "./stream-aligner.d.ts",
  "exports": {
    ".": { "types": "./stream-aligner.d.ts", "default": "./stream-aligner.js" },
    "./worker": { "types": "./stream-aligner-worker.d.ts", "default": "./stream-aligner-worker.js" }
  },
  "files": ["*.js", "*.d.ts", "pkg/", "pkg-threads/"],
  "sideEffects": false
}
JSON
mkdir -p target/npm
(cd "$stage" && npm pack --silent --pack-destination ..) >/dev/null
tgz="target/npm/$name-$version.tgz"
echo "$tgz: $(stat -c %s "$tgz") bytes packed; wasm $(stat -c %s "$pkg/stream_aligner_bg.wasm") bytes raw, $(gzip -9 -c "$pkg/stream_aligner_bg.wasm" | wc -c) gzip"
