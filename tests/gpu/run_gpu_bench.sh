#!/usr/bin/env bash
# The CUDA decode paged-attention benchmark (bench/attention_bench.c) and decode/prefill benchmark
# (bench/decode_bench.c) on a GPU machine, from a relocatable bundle:
# generates the Llama-2-7B-shaped model with random fp16 weights and its four adapters once (MODEL_DIR,
# default /tmp/llama7b), then runs the benchmark at TP=1 and, with two GPUs, at TP=2. JSON and logs go
# to OUT_DIR.
# usage: tests/gpu/run_gpu_bench.sh BUNDLE_DIR OUT_DIR [MODEL_DIR]
set -uo pipefail
bundle=$(cd "$1" && pwd); out=$2; model=${3:-/tmp/llama7b}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
gpus=$(nvidia-smi -L | wc -l)
timeout 120 "$bundle/bin/attention_bench" > "$out/attention.json" 2> "$out/attention.log"
echo "attention_bench: exit $?"; cat "$out/attention.json"
gen=()
[ -f "$model/config.json" ] && [ -d "$model-adapters/r64" ] || gen=(--generate)
timeout 420 mpirun -np 1 "$bundle/bin/decode_bench" "$model" "${gen[@]}" > "$out/decode_tp1.json" 2> "$out/decode_tp1.log"
echo "decode_bench TP=1: exit $?"; cat "$out/decode_tp1.json"
if [ "$gpus" -ge 2 ]; then
  timeout 300 mpirun -np 2 "$bundle/bin/decode_bench" "$model" > "$out/decode_tp2.json" 2> "$out/decode_tp2.log"
  echo "decode_bench TP=2: exit $?"; cat "$out/decode_tp2.json"
fi
