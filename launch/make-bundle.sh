#!/usr/bin/env bash
# Builds a relocatable bundle: the given programs in DIR/bin and the shared libraries they need that a GPU
# node without our -dev packages lacks (gRPC, abseil, protobuf-c, re2, c-ares, upb, PCRE2, ICU, ...) in
# DIR/lib. What the node must provide itself is left out on purpose: the C runtime, MPI (its own mpirun
# must match its libmpi) and the CUDA libraries (they must match its driver). loraserve-launch is copied
# into DIR/bin too; it and deploy/slurm/loraserve.sbatch put DIR/lib on LD_LIBRARY_PATH by themselves:
#   DIR/bin/loraserve-launch --tp 2 --model /models/m        (or LD_LIBRARY_PATH=DIR/lib DIR/bin/loraserve)
# usage: launch/make-bundle.sh DIR PROGRAM...   e.g. launch/make-bundle.sh /opt/loraserve build/launch/loraserve
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DIR PROGRAM..." >&2; exit 2; }
dir=$1; shift
mkdir -p "$dir/bin" "$dir/lib"
# Provided by the node: libc family, the compiler runtime, MPI and its helpers, CUDA, NCCL.
node_provided='^(linux-vdso|ld-linux|libc\.|libm\.|libpthread|libdl\.|librt\.|libgcc_s|libstdc\+\+|libmpi|libopen-|libpmix|libhwloc|libevent|libucp|libucs|libuct|libucm|libfabric|libpsm|libibverbs|librdmacm|libnl-|libudev|libcuda|libcudart|libcublas|libnccl|libz\.)'
for prog in "$@"; do
  cp -L "$prog" "$dir/bin/"
  ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r name path; do
    if ! [[ $name =~ $node_provided ]]; then cp -Lu "$path" "$dir/lib/"; fi
  done
done
cp "$(dirname "${BASH_SOURCE[0]}")/loraserve-launch" "$dir/bin/"
du -sh "$dir" | awk '{print "bundle: " $1 " in '"$dir"'"}'
