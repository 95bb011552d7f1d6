#!/usr/bin/env bash
# The edge runtimes, from npm: Deno and workerd (their binaries run without the install scripts).
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@deno ] && [ -d node_modules/@cloudflare ] || npm ci --no-audit --no-fund
