#!/bin/bash
# Device call 2: joins the model, probes the speed of the runs side by side, sizes their steps to
# end before the deadline ($1: the seconds this call may take), trains, and brings back each
# run's adapter, a snapshot at two thirds of the time, and the logs (logs.tgz).
START=$(date +%s); LIMIT=${1:-500}; DEADLINE=$((START + LIMIT - 40))
R=$PWD; W=$R/.work; [ -x $W/sa ] || { echo "no .work/sa: call 1's files are gone"; exit 3; }
[ -z "${SKIPDEB:-}" ] && { for f in $R/.gl/*.deb; do dpkg -x $f /; done; ldconfig; }
[ -n "${VKFILES:-}" ] && export VK_DRIVER_FILES=$VKFILES
cd $W; LOGS=$OUT/logs; mkdir -p $LOGS
unxz() { xz -dc "$1" 2>/dev/null || python3 -c "import lzma,sys,shutil;shutil.copyfileobj(lzma.open(sys.argv[1]),sys.stdout.buffer)" "$1"; }
cat model.xz.a $R/.dev2/model.xz.b > model.xz && unxz model.xz > model.gguf
sha256sum model.gguf | tee $LOGS/sha.txt | grep -q b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 || { echo "model checksum wrong"; exit 4; }
nvidia-smi --query-gpu=name,memory.used --format=csv > $LOGS/gpu.txt 2>&1
AC=${ACCUM:-16}; COMMON="--backend ${BACKEND:-wgpu} --model model.gguf --accum $AC"
mapfile -t RUNS < <(grep -v '^#' $R/.dev2/runs.txt | grep .)
# The probe: the runs side by side for 4 steps; the rate from steps 2-4 (step 1 compiles).
for line in "${RUNS[@]}"; do set -- $line; n=$1; shift
  ./sa train $COMMON "$@" --steps 4 --eval-examples 4 --eval-every 0 --out probe-$n > $LOGS/probe-$n.txt 2>&1 & done; wait
LEFT=$((DEADLINE - $(date +%s) - 45))
STEPS=$(python3 - $LEFT $AC probe-*/train-log.jsonl <<'PY'
import json, sys
rates = []
for p in sys.argv[3:]:
    rows = [json.loads(l) for l in open(p) if '"tok_s"' in l]
    t = [sum(r['tokens'] for r in rows[:i + 1]) / rows[i]['tok_s'] for i in range(len(rows))]
    rates.append(sum(r['tokens'] for r in rows[1:]) / (t[-1] - t[0]))
print(f'probe: {rates} tokens/s', file=sys.stderr)
print(max(10, int(0.85 * float(sys.argv[1]) * min(rates) / (int(sys.argv[2]) * 191))))
PY
)
[ -n "${STEPS_MAX:-}" ] && [ $STEPS -gt $STEPS_MAX ] && STEPS=$STEPS_MAX
echo "left ${LEFT}s, steps $STEPS of $AC" | tee $LOGS/plan.txt
MIN=$(python3 -c "print(max(0.5, ($DEADLINE - $(date +%s) - 25) / 60))")
EV=$(( STEPS / 6 > 5 ? STEPS / 6 : 5 )); PIDS=""
for line in "${RUNS[@]}"; do set -- $line; n=$1; shift
  ./sa train $COMMON "$@" --steps $STEPS --eval-every $EV --checkpoint-every 10 --minutes $MIN --out run-$n > $LOGS/run-$n.txt 2>&1 &
  PIDS="$PIDS $!"; done
( sleep $(( (DEADLINE - $(date +%s)) * 2 / 3 )); for line in "${RUNS[@]}"; do set -- $line
  cp run-$1/checkpoint/adapter.safetensors $OUT/$1-snapshot.safetensors; cp run-$1/checkpoint/state.json $LOGS/$1-snapshot-state.json; done ) &
SNAP=$!; wait $PIDS; kill $SNAP 2>/dev/null
for line in "${RUNS[@]}"; do set -- $line; n=$1
  cp run-$n/adapter.safetensors $OUT/$n.safetensors; cp run-$n/config.json $LOGS/$n-config.json; cp run-$n/train-log.jsonl $LOGS/$n-train-log.jsonl; done
tail -n 2 $LOGS/run-*.txt
cd $OUT && tar czf logs.tgz logs && rm -rf logs; ls -la $OUT; echo "done in $(( $(date +%s) - START ))s"
