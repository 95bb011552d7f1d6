#!/usr/bin/env bash
# Builds the extension, unpacked, into target/extension/ (load it with chrome://extensions →
# "Load unpacked", or --load-extension): the scripts here, the JS API, the CPU-only wasm
# package (www/pkg-cpu, built if missing) and the model and adapter, so it works offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f www/pkg-cpu/stream_aligner_bg.wasm ] || bash www/build.sh cpu
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "no $model: run stream-aligner fetch" >&2; exit 1; }
out=target/extension
rm -rf "$out"
mkdir -p "$out/pkg" "$out/models"
cp www/extension/{manifest.json,settings.js,background.js,content.js,offscreen.html,offscreen.js,options.html,options.js} "$out/"
cp www/stream-aligner.js "$out/"
cp www/pkg-cpu/stream_aligner.js www/pkg-cpu/stream_aligner_bg.wasm "$out/pkg/"
# Hard links where the file system allows: the model is 98 MB.
ln -f "$model" "$out/models/" 2>/dev/null || cp "$model" "$out/models/"
cp models/aligner/lora/adapter.safetensors "$out/models/adapter.safetensors"
echo "$out: $(du -sh "$out" | cut -f1) (load it unpacked)"
