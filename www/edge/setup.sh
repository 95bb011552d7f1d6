#!/usr/bin/env bash
# The edge runtimes, from npm: Deno and workerd (their binaries run without the install scripts).
# `npm install`, not `npm ci`: npm writes these packages' per-platform optional dependencies
# into the lock file incompletely, and `npm ci` then refuses the lock. The lock still pins
# the versions.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@deno ] && [ -d node_modules/@cloudflare ] || npm install --no-audit --no-fund
