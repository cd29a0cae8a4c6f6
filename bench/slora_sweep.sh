#!/usr/bin/env bash
# S-LoRA's synthetic-workload benchmark on a GPU machine, in one command: generates the Llama-2-shaped
# model (random fp16) and the S1/S2 adapter populations once (kept under $BENCH_WORK), serves them with
# the CUDA backend from a relocatable bundle, replays the workload at every sweep point with
# bench/loadgen.py, then the HF transformers + PEFT baseline (bench/hf_peft_baseline.py) on the same
# model, adapters and trace, and plots (bench/plot.sh). Every step is bounded: a point that no longer
# fits in the time budget is skipped and listed in OUT_DIR/sweep.json, so the run ends in time.
#
# usage: bench/slora_sweep.sh BUNDLE_DIR OUT_DIR [quick|full] [7b|13b-tp1|13b-tp2|tiny-cpu]
#   The bundle holds loraserve and gen_bench_model:
#     launch/make-bundle.sh BUNDLE_DIR build/launch/loraserve build/bench/gen_bench_model
#   quick: fits a 10-minute call (budget 480 s, about 90 s of it start-up): 15 s traces (+ at most 8 s of
#          drain) at n = 100, 5, 0, 1000, 5000 (S1) and 5, 1000 (S2), rates 8 and 16 at n = 100, a 45 s
#          PEFT run; pools of 64 (S1) and 32 (S2) distinct adapter directories.
#   full:  30 s traces (+ 20 s), every n, rates 8..40 at n = 100, the target point (S1, n = 2000, R =
#          HEADLINE_RATE, 120 s trace), two PEFT runs; pools of 100 and 100. About 25 minutes (budget
#          1500 s): where one call is capped at 10 minutes, split it with POINTS (e.g.
#          POINTS='^(S1_n(1|5|100|1000|2000|5000)_r32|base)' NO_HF=1, then POINTS='^S2' NO_HF=1, ...).
#   13b-tp2: Llama-2-13B shape on 2 GPUs (TP=2); falls back to 7b with fewer than 2 GPUs. 13b-tp1: the
#          same model on one GPU, for the comparison (a second run reuses the generated model).
#   tiny-cpu: the script itself on a machine without a GPU (demo-sized model, CPU backend, TP=2, 3 s
#          traces, lengths in [8, 32], no baseline): a check of the plumbing, not a benchmark.
# Environment: BUDGET_S, PRELOAD (default 1: register every name before its point, untimed),
#   ADAPTER_CACHE_MB (pinned host adapter copies, default 49152), BENCH_WORK (default
#   /tmp/loraserve-bench), RATE (table rate, default 32 req/s), RATES (the rate sweep at n = 100),
#   HEADLINE_RATE (default 30), TRACE_S (trace seconds of every point but the target), POINTS (only
#   points whose name matches this regex), NO_HF=1, SERVER_FLAGS (extra loraserve flags), METRICS_PORT
#   (default 19464: each point records the server's step metrics), PYTHON (default python3).
# Outputs in OUT_DIR: results/*.json (one per point), plots/*.png|svg and table.md if gnuplot is there
# (else run bench/plot.sh OUT_DIR later), sweep.json (what ran, what was skipped), logs/.
# Commit-ready: copy OUT_DIR's results/, plots/, table.md and sweep.json to bench/results/slora/.
set -uo pipefail
[ $# -ge 2 ] || { sed -n '2,31p' "$0"; exit 2; }
bundle=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && out=$(cd "$2" && pwd)
mode=${3:-quick}; variant=${4:-7b}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
start=$SECONDS
python=${PYTHON:-python3}
mkdir -p "$out/results" "$out/logs"
log() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*" | tee -a "$out/logs/sweep.log" >&2; }

case $mode in
  quick) budget=${BUDGET_S:-480}; dur=15; drain=8; pool1=64; pool2=32; hf_cap=45 ;;
  full)  budget=${BUDGET_S:-1500}; dur=30; drain=20; pool1=100; pool2=100; hf_cap=90 ;;
  *) echo "mode: quick or full" >&2; exit 2 ;;
esac
dur=${TRACE_S:-$dur}
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
device=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
device=${device:-no GPU found}
tp=1; shape=7b; backend=cuda; lens=8,512; kv_mb=98304; weights="random fp16 (tiled)"
cache_mb=${ADAPTER_CACHE_MB:-49152}   # pinned host copies of the adapters: S1's 2000 fit (S-LoRA keeps all in RAM)
if [ "$variant" = 13b-tp1 ]; then
  shape=13b
elif [ "$variant" = 13b-tp2 ]; then
  if [ "$gpus" -ge 2 ]; then tp=2; shape=13b; else log "13b-tp2 needs 2 GPUs ($gpus found): running 7b"; fi
elif [ "$variant" = tiny-cpu ]; then
  tp=2; shape=tiny; backend=cpu; lens=8,32; kv_mb=256; dur=3; drain=5; pool1=8; pool2=8; NO_HF=1; cache_mb=256
  weights="random fp32 (demo shape)"
  device="CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc)"
fi
gen=$bundle/bin/gen_bench_model; [ -x "$gen" ] || gen=$repo/build/bench/gen_bench_model
server=$bundle/bin/loraserve
for b in "$gen" "$server"; do [ -x "$b" ] || { log "missing $b (see the usage)"; exit 2; }; done
work=${BENCH_WORK:-/tmp/loraserve-bench}
model=$work/llama2-$shape; adroot=$work/adapters-$shape
mkdir -p "$work"
log "mode $mode, budget ${budget}s, $shape TP=$tp, $gpus GPU(s): $device"

# --- model and adapters (kept: a second run reuses them) ----------------------------------------------
if [ ! -f "$model/.complete" ]; then
  rm -rf "$model"
  "$gen" model "$model" "$shape" 2>&1 | tee -a "$out/logs/gen.log" >&2 && touch "$model/.complete" \
    || { log "model generation failed"; exit 1; }
fi
make_adapters() {   # setting, distinct pool, ranks
  local dir=$adroot/$1 want="$2 $3 5000"
  [ "$(cat "$dir/.complete" 2>/dev/null)" = "$want" ] && return 0
  rm -rf "$dir"
  "$gen" adapters "$model" "$dir" 5000 "$2" "$3" 2>&1 | tee -a "$out/logs/gen.log" >&2 && echo "$want" > "$dir/.complete"
}
make_adapters s1 $pool1 8 && make_adapters s2 $pool2 8,16,32,64 || { log "adapter generation failed"; exit 1; }
log "model and adapters ready ($(du -sh "$model" | cut -f1) model, $(du -sh "$adroot" | cut -f1) adapters)"

# --- the server ---------------------------------------------------------------------------------------
flags=(--model "$model" --adapters "$adroot" --backend $backend --log-level warn --max-waiting 16384 --max-batch ${MAX_BATCH:-256}
       --max-step-tokens 2048 --kv-cache-mb $kv_mb --adapter-cache-mb $cache_mb --prefetch-adapters 8 --shutdown-grace-s 3
       --metrics-listen 127.0.0.1:${METRICS_PORT:-19464})
# shellcheck disable=SC2206
flags+=(${SERVER_FLAGS:-})
srv=$out/logs/server
rm -f "$srv.port" "$srv.pid"
t=$SECONDS
set -m     # the server gets its own process group: a hung one is killed whole, and only it
mpirun -np $((tp + 1)) "$server" --listen 127.0.0.1:0 --port-file "$srv.port" --pid-file "$srv.pid" "${flags[@]}" \
  > "$srv.log" 2>&1 &
job=$!
set +m
stop_server() {
  [ -n "${job:-}" ] || return 0
  kill -TERM "$(cat "$srv.pid" 2>/dev/null)" 2>/dev/null
  for _ in $(seq 30); do kill -0 $job 2>/dev/null || break; sleep 1; done
  kill -0 $job 2>/dev/null && kill -KILL -- -$job 2>/dev/null
  wait $job 2>/dev/null; job=
}
trap stop_server EXIT
for _ in $(seq 600); do [ -s "$srv.port" ] || ! kill -0 $job 2>/dev/null && break; sleep 0.5; done
addr=127.0.0.1:$(cat "$srv.port" 2>/dev/null)
if ! "$python" "$repo/scripts/generate.py" --addr "$addr" --health --wait-ready 300 > /dev/null; then
  log "server did not come up:"; tail -20 "$srv.log" >&2; exit 1
fi
server_start_s=$((SECONDS - t))
log "serving at $addr after ${server_start_s}s"

# --- sweep points --------------------------------------------------------------------------------------
rate=${RATE:-32}
skipped=(); ran=()
reserve=$(( ${NO_HF:-0} == 1 ? 20 : hf_cap + 70 ))     # kept for the baseline, the plots and the shutdown
point() {   # name setting n rate role [trace seconds]: one loadgen run, if it fits in what is left of the budget
  local name=$1 setting=$2 n=$3 r=$4 role=$5 d=${6:-$dur} need pre=()
  need=$((d + drain + 8))
  # Every name is registered (and read into host memory) before the trace, untimed, as S-LoRA loads
  # all adapters at start-up; names registered by an earlier point cost nothing again.
  if [ "${PRELOAD:-1}" = 1 ] && [ "$n" != 0 ]; then pre=(--preload); need=$((need + n / 40)); fi
  if [ -n "${POINTS:-}" ] && ! [[ $name =~ $POINTS ]]; then return 0; fi
  if [ $((SECONDS - start + need + reserve)) -gt "$budget" ]; then skipped+=("$name"); log "skip $name (budget)"; return 0; fi
  local ranks=8 pool=$pool1; [ "$setting" = S2 ] && { ranks=8,16,32,64; pool=$pool2; }
  [ "$n" = 0 ] && { ranks=none; pool=0; }
  if ! kill -0 "$job" 2>/dev/null; then skipped+=("$name"); log "skip $name (the server is gone: logs/server.log)"; return 0; fi
  timeout -k 5 $((need + 60)) "$python" "$here/loadgen.py" --addr "$addr" --n-adapters "$n" "${pre[@]}" \
    --adapter-pattern "$(tr 'S' 's' <<< "$setting")/a{:04d}" --rate "$r" --cv 1 --alpha 1 --duration $d \
    --drain-s $drain --model "$model" --seed 42 --input-len $lens --output-len $lens --warmup-requests 2 --wait-ready 20 --device "$device" \
    --label "$name" --meta setting="$setting" --meta role="$role" --meta ranks="$ranks" --meta distinct_adapter_dirs="$pool" \
    --metrics-url "http://127.0.0.1:${METRICS_PORT:-19464}/metrics" \
    --meta model="Llama-2-$shape shape, $weights weights" --meta tp=$tp --meta mode="$mode" \
    --meta server_flags="${flags[*]:4}" --meta server_start_s=$server_start_s \
    --out "$out/results/$name.json" 2>&1 | tee -a "$out/logs/loadgen.log" >&2
  ran+=("$name")
}
# Table 3 first (the headline), every n at one rate above what one GPU sustains, as S-LoRA's R = 10 on
# an A100; then the target point, S1 at n = 2000 at HEADLINE_RATE with S-LoRA's 120 s traces (full
# mode); then first-token latency against the rate at n = 100, below and above saturation.
point "S1_n100_r$rate" S1 100 "$rate" table
point "S1_n5_r$rate" S1 5 "$rate" table
point "base_n0_r$rate" S1 0 "$rate" table
point "S2_n5_r$rate" S2 5 "$rate" table
point "S1_n1000_r$rate" S1 1000 "$rate" table
point "S2_n1000_r$rate" S2 1000 "$rate" table
point "S1_n5000_r$rate" S1 5000 "$rate" table
if [ "$mode" = full ]; then
  point "S1_n1_r$rate" S1 1 "$rate" table
  point "S1_n2000_r$rate" S1 2000 "$rate" table
  point "S2_n100_r$rate" S2 100 "$rate" table
  point "S2_n2000_r$rate" S2 2000 "$rate" table
  point "S2_n5000_r$rate" S2 5000 "$rate" table
fi
if [ "$mode" = full ]; then
  hr=${HEADLINE_RATE:-30}
  point "S1_n2000_r${hr}_d120" S1 2000 "$hr" headline 120
fi
# shellcheck disable=SC2086
for r in ${RATES:-$( [ "$mode" = full ] && echo 8 16 24 28 40 || echo 8 16 )}; do point "S1_n100_r$r" S1 100 "$r" rate; done
stop_server
log "server stopped; ${#ran[@]} loadgen point(s) ran"

# --- the HF transformers + PEFT baseline (same trace, shorter: it is ~30x slower) -----------------------
hf() {   # name setting n rate
  local name=$1 need=$((hf_cap + 60))
  if [ "${NO_HF:-0}" = 1 ] || [ "$tp" != 1 ]; then return 0; fi
  if [ $((SECONDS - start + need)) -gt "$budget" ]; then skipped+=("$name"); log "skip $name (budget)"; return 0; fi
  timeout -k 10 $((need + 30)) "$python" "$here/hf_peft_baseline.py" --model "$model" --adapters "$adroot" \
    --n-adapters "$3" --adapter-pattern "$(tr 'S' 's' <<< "$2")/a{:04d}" --rate "$4" --cv 1 --alpha 1 \
    --duration $dur --seed 42 --input-len $lens --output-len $lens --time-cap-s $hf_cap --max-batch 32 --warmup-requests 2 --label "$name" \
    --meta setting="$2" --meta model="Llama-2-$shape shape, $weights weights" --meta mode="$mode" \
    --out "$out/results/$name.json" > "$out/logs/$name.log" 2>&1
  tail -3 "$out/logs/$name.log" >&2
  [ -f "$out/results/$name.json" ] && ran+=("$name")
}
hf "hf_S1_n5_r$rate" S1 5 "$rate"
[ "$mode" = full ] && hf "hf_S1_n100_r$rate" S1 100 "$rate"

# --- what ran, plots ----------------------------------------------------------------------------------
"$python" - "$out/sweep.json" "$mode" "$budget" "$((SECONDS - start))" "$device" "$shape" "$tp" "$dur" "$drain" \
  "$pool1" "$pool2" "$hf_cap" "${ran[*]:-}" "${skipped[*]:-}" "$*" <<'EOF'
import json, sys, time
f, mode, budget, took, device, shape, tp, dur, drain, p1, p2, hf_cap, ran, skipped, args = sys.argv[1:]
json.dump({'command': 'bench/slora_sweep.sh ' + args, 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'mode': mode, 'budget_s': int(budget), 'took_s': int(took), 'device': device, 'model_shape': shape,
           'tp': int(tp), 'trace_s': int(dur), 'drain_cap_s': int(drain), 'hf_time_cap_s': int(hf_cap),
           'distinct_adapter_dirs': {'S1': int(p1), 'S2': int(p2)},
           'adapter_names': 5000, 'note': 'names beyond the distinct pool are symlinks to pool directories; '
           'the server registers, pages and evicts each name as its own adapter',
           'ran': ran.split(), 'skipped': skipped.split()}, open(f, 'w'), indent=2)
EOF
if command -v gnuplot > /dev/null; then
  timeout 60 "$here/plot.sh" "$out" 2>&1 | tee -a "$out/logs/sweep.log" >&2
else
  log "gnuplot not found: run bench/plot.sh $out on another machine"
fi
log "done in $((SECONDS - start))s: $out"
