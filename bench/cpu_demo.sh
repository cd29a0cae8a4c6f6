#!/usr/bin/env bash
# CPU tokens/s of the embedded demo model: starts `mpirun -np 3 loraserve` (1 coordinator + 2 TP
# workers, CPU backend), runs serve_bench.py at a few concurrencies, writes bench/results/cpu_demo_c<N>.json.
# usage: bench/cpu_demo.sh [BUILD_DIR]   (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
       OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_hwloc_base_binding_policy=none
tmp=$(mktemp -d)
mpirun -np 3 "$build/launch/loraserve" --listen 127.0.0.1:0 --port-file "$tmp/port" --pid-file "$tmp/pid" \
  --demo-dir "$tmp/demo" --log-level warn > "$tmp/log" 2>&1 &
job=$!
trap 'kill -TERM "$(cat "$tmp/pid" 2>/dev/null)" 2>/dev/null; wait $job; rm -rf "$tmp"' EXIT
for _ in $(seq 300); do [ -s "$tmp/port" ] && break; sleep 0.1; done
addr=127.0.0.1:$(cat "$tmp/port")
mkdir -p "$here/results"
for c in 1 8 32; do
  /usr/bin/python3 "$here/serve_bench.py" --addr "$addr" --concurrency $c --requests $((c * 8 > 16 ? c * 8 : 16)) \
    --prompt-len 32 --max-new-tokens 64 --label "demo model, CPU backend, mpirun -np 3, concurrency $c" \
    --out "$here/results/cpu_demo_c$c.json" | grep -E '"(tokens_per_s|requests_per_s|wall_s)"'
done
