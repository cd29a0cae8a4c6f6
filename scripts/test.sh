#!/usr/bin/env bash
# The one test command (README, .ci/run): configures and builds loraserve, installs the npm packages the
# tests use as independent oracles (gRPC client, reference tokenizers), runs every meson test suite and
# ends with one line `N passed, N failed` counted from meson's testlog.json by
# scripts/test-summary.py (per TAP check). Exits non-zero when anything failed or nothing ran.
#   BUILD_DIR=dir   build directory (default: build)
#   extra arguments go to `meson test` (e.g. --suite unit, or test names)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
PYTHON=${PYTHON:-python3}
start=$(date +%s.%N)

# MPI as root on a small machine (tests also set these through meson; direct runs need them too).
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
export OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}

elapsed() { awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
finish_failed_step() {   # $1: step name; the closing line still comes from the summariser
  echo "wall time: $(elapsed) s"
  "$PYTHON" scripts/test-summary.py /dev/null --failed-step "$1"
  exit 1
}

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  wipe=()
  [ -d "$BUILD_DIR/meson-private" ] && wipe=(--wipe)   # a half-configured directory from a failed setup
  echo "== meson setup $BUILD_DIR"
  meson setup "${wipe[@]}" "$BUILD_DIR" || finish_failed_step "meson setup"
fi

echo "== ninja -C $BUILD_DIR"
ninja -C "$BUILD_DIR" || finish_failed_step "build"

# npm packages, no lock files: exact versions live in each package.json.
for dir in tests/e2e tests/tokenizer tests/deploy; do
  if [ -f "$dir/package.json" ]; then
    echo "== npm install --prefix $dir"
    if ! npm install --prefix "$dir" --no-package-lock --no-audit --no-fund --loglevel=error; then
      echo "warning: npm install in $dir failed; the tests that need it will skip" >&2
    fi
  fi
done

echo "== meson test"
rm -f "$BUILD_DIR/meson-logs/testlog.json"
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 "$@"
meson_rc=$?

echo "wall time: $(elapsed) s"
"$PYTHON" scripts/test-summary.py "$BUILD_DIR/meson-logs/testlog.json" --meson-rc "$meson_rc"
