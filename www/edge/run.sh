#!/usr/bin/env bash
# Serves the aligning gateway on an edge runtime, on 127.0.0.1:PORT, in front of an
# OpenAI-compatible upstream:
#   bash www/edge/run.sh deno|workerd --port P --upstream URL [--upstream-model NAME]
# The upstream's key, if any, comes from $STREAM_ALIGNER_API_KEY. Needs the CPU-only package
# (bash www/build.sh cpu) and the runtimes from npm (www/edge/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runtime="${1:?usage: run.sh deno|workerd --port P --upstream URL [--upstream-model NAME]}"; shift
port=8787 upstream="" model=default
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --upstream) upstream="$2"; shift 2 ;;
    --upstream-model) model="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$upstream" ] || { echo "--upstream URL is required" >&2; exit 2; }
[ -f "$root/www/pkg-cpu/stream_aligner_bg.wasm" ] || { echo "no www/pkg-cpu: run bash www/build.sh cpu" >&2; exit 1; }
bin="$here/node_modules/.bin"
case "$runtime" in
  deno)
    deno="$here/node_modules/@deno/linux-x64-glibc/deno"
    [ -x "$deno" ] || deno="$(command -v deno || true)"
    [ -n "$deno" ] || { echo "no deno: run bash www/edge/setup.sh" >&2; exit 1; }
    export PORT="$port" STREAM_ALIGNER_UPSTREAM="$upstream" STREAM_ALIGNER_UPSTREAM_MODEL="$model"
    exec "$deno" run --quiet --no-prompt --allow-read="$root" --allow-net --allow-env "$here/deno.js"
    ;;
  workerd)
    workerd="$here/node_modules/@cloudflare/workerd-linux-64/bin/workerd"
    [ -x "$workerd" ] || { echo "no workerd: run bash www/edge/setup.sh" >&2; exit 1; }
    dir="$(mktemp -d)"
    trap 'rm -rf "$dir"' EXIT
    cp "$here/worker.js" "$here/gateway.js" "$root/www/pkg-cpu/stream_aligner.js" "$root/www/pkg-cpu/stream_aligner_bg.wasm" "$dir/"
    key_binding=""
    if [ -n "${STREAM_ALIGNER_API_KEY:-}" ]; then
      key_binding="(name = \"STREAM_ALIGNER_API_KEY\", fromEnvironment = \"STREAM_ALIGNER_API_KEY\"),"
    fi
    cat > "$dir/config.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .gateway),
    (name = "models", disk = (path = "$root/models", writable = false)),
    (name = "internet", network = (allow = ["local", "private", "public"], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:$port", http = (), service = "main") ],
);
const gateway :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "gateway.js", esModule = embed "gateway.js"),
    (name = "stream_aligner.js", esModule = embed "stream_aligner.js"),
    (name = "stream_aligner_bg.wasm", wasm = embed "stream_aligner_bg.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  bindings = [
    $key_binding
    (name = "MODELS", service = "models"),
    (name = "MODEL", text = "SmolLM2-135M-Instruct.Q4_1.gguf"),
    (name = "ADAPTER", text = "aligner/lora/adapter.safetensors"),
    (name = "UPSTREAM", text = "$upstream"),
    (name = "UPSTREAM_MODEL", text = "$model")
  ],
  globalOutbound = "internet",
);
CAPNP
    echo "aligning gateway (workerd) on http://127.0.0.1:$port/v1" >&2
    "$workerd" serve "$dir/config.capnp" --experimental
    ;;
  *) echo "runtime is deno or workerd, not $runtime" >&2; exit 2 ;;
esac
