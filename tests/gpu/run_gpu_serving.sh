#!/usr/bin/env bash
# The serving path on a GPU machine, from a relocatable bundle (launch/make-bundle.sh with loraserve and
# gen_adapters): the PEFT golden cases served through gRPC with lazy adapter loading at TP=1 and TP=2,
# the 2,000-adapter scale test and the preemption test, all on the CUDA backend (fp32 storage, so the
# greedy tokens can be compared exactly). Clients are the project's Python tests (python3 with grpcio).
# usage: tests/gpu/run_gpu_serving.sh BUNDLE_DIR OUT_DIR
set -uo pipefail
bundle=$(cd "$1" && pwd); out=$2
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export LORASERVE_BACKEND=cuda LORASERVE_CUDA_DTYPE=f32
mpirun=$(command -v mpirun)
gpus=$(nvidia-smi -L | wc -l)
summary() { printf '%-40s %s passed, %s failed\n' "$1" "$(grep -c '^ok' "$2")" "$(grep -c '^not ok' "$2")"; }
for tp in 1 2; do
  [ "$tp" -le "$gpus" ] || continue
  timeout 240 python3 tests/golden_lora/golden_lora_grpc.py "$mpirun" "$bundle/bin/loraserve" tests/golden_lora $tp \
    > "$out/golden_lora_grpc_tp$tp.log" 2>&1
  summary "golden_lora_grpc cuda TP=$tp" "$out/golden_lora_grpc_tp$tp.log"
done
if [ "$gpus" -ge 2 ]; then
  SCALE_ALLOW_DIFFER=3 SCALE_RSS_LIMIT_MB=2048 SCALE_JSON="$out/scale_gpu.json" timeout 400 python3 tests/scale/scale_test.py "$mpirun" "$bundle/bin/loraserve" \
    "$bundle/bin/gen_adapters" tests/golden_lora/base 2000 2500 > "$out/scale_gpu.log" 2>&1
  summary "scale 2000 adapters cuda TP=2" "$out/scale_gpu.log"
  grep -E '^(not ok|# figures)' "$out/scale_gpu.log"
fi
