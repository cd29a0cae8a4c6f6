#!/usr/bin/env bash
# The GPU test suite on a GPU machine, from a relocatable bundle built elsewhere (launch/make-bundle.sh):
# every CUDA kernel against its CPU twin, compute-sanitizer memcheck on the kernel tests, and the CUDA
# backend's full forward pass against the transformers golden fixtures and, with LoRA adapters served
# from the device pool, against the PEFT multi-LoRA fixtures (fp32 storage: the same tolerance as the
# CPU backend; bf16 storage: reported). Logs go to OUT_DIR; a summary is printed. Run from the repo
# root (the fixtures are read from tests/golden and tests/golden_lora).
# usage: tests/gpu/run_gpu_tests.sh BUNDLE_DIR OUT_DIR
# The bundle holds test_cuda_kernels test_cuda_attention test_cuda_lora test_cuda_sample test_golden
# test_golden_lora, e.g.  launch/make-bundle.sh BUNDLE_DIR build/tests/kernels/test_cuda_{kernels,attention,
# lora,sample} build/tests/golden/test_golden build/tests/golden_lora/test_golden_lora
set -uo pipefail
bundle=$(cd "$1" && pwd); out=$2
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" NCCL_NVLS_ENABLE=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
gpus=$(nvidia-smi -L | tee "$out/gpus.txt" | wc -l)
summary() {   # name, log: TAP totals
  printf '%-48s %s passed, %s failed %s\n' "$1" "$(grep -c '^ok' "$2")" "$(grep -c '^not ok' "$2")" \
    "$(grep -m1 -o '1\.\.0 # SKIP.*' "$2")"
}
for t in test_cuda_kernels test_cuda_attention test_cuda_lora test_cuda_sample; do
  timeout 300 "$bundle/bin/$t" > "$out/$t.log" 2>&1; summary "$t" "$out/$t.log"
done
timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 "$bundle/bin/test_cuda_kernels" > "$out/memcheck_kernels.log" 2>&1
echo "memcheck test_cuda_kernels: exit $? ($(grep -m1 'ERROR SUMMARY' "$out/memcheck_kernels.log"))"
for tp in 1 2; do
  [ "$tp" -le "$gpus" ] || { echo "golden TP=$tp: skipped ($gpus GPU)"; continue; }
  for f in llama_gqa mistral_sw llama_bf16; do
    LORASERVE_BACKEND=cuda LORASERVE_CUDA_DTYPE=f32 timeout 300 mpirun -np $tp "$bundle/bin/test_golden" \
      "tests/golden/$f" > "$out/golden_cuda_f32_${f}_tp$tp.log" 2>&1
    summary "golden cuda f32 $f TP=$tp" "$out/golden_cuda_f32_${f}_tp$tp.log"
  done
  LORASERVE_BACKEND=cuda LORASERVE_CUDA_DTYPE=bf16 timeout 300 mpirun -np $tp "$bundle/bin/test_golden" \
    tests/golden/llama_gqa > "$out/golden_cuda_bf16_llama_gqa_tp$tp.log" 2>&1
  echo "golden cuda bf16 llama_gqa TP=$tp (storage rounding, reported only): $(grep -o 'max |diff| [0-9.e+-]*' "$out/golden_cuda_bf16_llama_gqa_tp$tp.log" | sort -t' ' -k3 -g | tail -1)"
  # Multi-LoRA: 7 adapters (ranks 1..64, rsLoRA, patterns, MLP-only) copied into the device pool.
  LORASERVE_BACKEND=cuda LORASERVE_CUDA_DTYPE=f32 timeout 300 mpirun -np $tp "$bundle/bin/test_golden_lora" \
    tests/golden_lora > "$out/golden_lora_cuda_f32_tp$tp.log" 2>&1
  summary "golden_lora cuda f32 TP=$tp" "$out/golden_lora_cuda_f32_tp$tp.log"
  LORASERVE_BACKEND=cuda LORASERVE_CUDA_DTYPE=bf16 timeout 300 mpirun -np $tp "$bundle/bin/test_golden_lora" \
    tests/golden_lora > "$out/golden_lora_cuda_bf16_tp$tp.log" 2>&1
  echo "golden_lora cuda bf16 TP=$tp (storage rounding, reported only): $(grep -o 'max |diff| [0-9.e+-]*' "$out/golden_lora_cuda_bf16_tp$tp.log" | sort -t' ' -k3 -g | tail -1)"
done
