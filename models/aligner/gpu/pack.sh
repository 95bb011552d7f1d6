#!/bin/bash
# Packs a training run for a lent GPU machine (the workplace's device tool) in two payloads,
# since one call carries at most 64 MiB and the model alone is 98 MB:
#   .dev1/  the stripped binary, the data and init adapters, the model's first part, setup.sh
#   .dev2/  the model's second part, train.sh and the runs (one per line: name, then train flags)
# Usage: bash models/aligner/gpu/pack.sh RUNS_FILE   (from the repository root, after a release build)
# Then, while nothing else is built: move the tracked *.jsonl and adapters out of the working
# tree (it must travel under 64 MiB with each payload; put them back after), run
# `bash .dev1/setup.sh` carrying .gl and .dev1, and at once `bash .dev2/train.sh SECONDS`
# carrying .gl and .dev2, with a timeout of SECONDS (the machine stays warm 30 s between calls).
set -euo pipefail
RUNS=${1:?runs file}
BIN=${CARGO_TARGET_DIR:-target}/release/stream-aligner
G=$(dirname "$0")
rm -rf .dev1 .dev2; mkdir -p .dev1 .dev2
for d in /.dev1/ /.dev2/ /.work/ /.gl/; do grep -qxF $d .git/info/exclude 2>/dev/null || echo $d >> .git/info/exclude; done
strip -o /tmp/sa-strip "$BIN"; xz -T2 -6 -c /tmp/sa-strip > .dev1/sa.xz
# Every file the runs name (--data lists, --init adapters).
FILES=$(grep -oE -- '--(data|init) [^ ]+' "$RUNS" | cut -d' ' -f2 | tr ',' '\n' | sort -u)
tar cf - $FILES | xz -T2 -6 > .dev1/data.tar.xz
xz -T2 -6 -c models/SmolLM2-135M-Instruct.Q4_1.gguf > /tmp/model.xz
head -c 40000000 /tmp/model.xz > .dev1/model.xz.a; tail -c +40000001 /tmp/model.xz > .dev2/model.xz.b
cp "$G/setup.sh" .dev1/; cp "$G/train.sh" .dev2/; cp "$RUNS" .dev2/runs.txt
if [ ! -d .gl ]; then
  mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update >/dev/null; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .dev1 .dev2 .gl
