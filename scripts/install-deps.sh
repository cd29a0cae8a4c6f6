#!/usr/bin/env bash
# Installs the Debian 12 packages that building and testing loraserve need, and only those missing, so
# that it is cheap to call before every build (scripts/demo.sh, .ci/run). apt runs only when something
# is missing; nodejs/npm are added only when the `node`/`npm` commands are absent (a machine may have
# its own Node.js build, which a Debian package would conflict with).
set -euo pipefail

pkgs=(
  meson ninja-build pkg-config                   # build
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler  # gRPC C core + protobuf-c (codegen: protoc-c)
  libopenmpi-dev openmpi-bin                     # ranks: coordinator + tensor-parallel workers
  libpcre2-dev libicu-dev                                   # tokenizer pre-tokenization regexes
  libmicrohttpd-dev                              # Prometheus metrics endpoint (coordinator/metrics.c)
  python3-grpcio python3-numpy                   # Python client (scripts/generate.py) and fixtures
  valgrind                                       # memory checks in tests
  slurmctld slurmd slurm-client munge           # tests/deploy: the sbatch script under a real Slurm
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
