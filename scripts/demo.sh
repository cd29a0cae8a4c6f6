#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine it installs the packages, builds, starts
# loraserve as 1 coordinator + 2 tensor-parallel worker ranks (CPU backend, the built-in tiny demo
# model), sends one sample Generate with the Python gRPC client (scripts/generate.py), prints the address
# and the answer, then keeps serving in the foreground until Ctrl-C, which stops the job gracefully
# (launch/loraserve-launch forwards the stop to rank 0 only).
#   LISTEN=host:port     where to serve (default 127.0.0.1:50051; port 0 picks a free one)
#   PROMPT=text          the sample prompt
#   DEMO_ONESHOT=1       stop the server after the sample and exit 0 (used by a test)
#   LORASERVE_BIN=path   use this binary: skips installing and building
#   BUILD_DIR=dir        build directory (default: build)
set -uo pipefail
cd "$(dirname "$0")/.."
LISTEN=${LISTEN:-127.0.0.1:50051}
PROMPT=${PROMPT:-Once upon a time, in a small town by the sea,}
BUILD_DIR=${BUILD_DIR:-build}
START_TIMEOUT=${START_TIMEOUT:-300}
PYTHON=${PYTHON:-/usr/bin/python3}      # Debian's python, where python3-grpcio lives
[ -x "$PYTHON" ] || PYTHON=python3

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
[ -t 1 ] || say() { printf 'demo: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

bin=${LORASERVE_BIN:-}
if [ -z "$bin" ]; then
  bash scripts/install-deps.sh || die "installing packages failed"
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    meson setup "$BUILD_DIR" || die "meson setup failed"
  fi
  ninja -C "$BUILD_DIR" || die "build failed"
  bin=$BUILD_DIR/launch/loraserve
fi
[ -x "$bin" ] || die "no server binary at $bin"

log=$(mktemp "${TMPDIR:-/tmp}/loraserve-demo.XXXXXX.log")
say "starting: mpirun -np 3 $bin --listen $LISTEN   (log: $log)"
# Its own session: a Ctrl-C on the terminal reaches only this script, which then stops the job gracefully.
setsid --wait launch/loraserve-launch --bin "$bin" --tp 2 --listen "$LISTEN" >"$log" 2>&1 </dev/null &
launcher=$!

stop_server() {   # graceful: the launcher forwards SIGTERM to rank 0
  kill -TERM "$launcher" 2>/dev/null
  local rc
  while :; do
    wait "$launcher"; rc=$?
    kill -0 "$launcher" 2>/dev/null || break
  done
  return "$rc"
}
show_log() { say "server log ($log):"; sed 's/^/  | /' "$log" >&2; }

stopping=0
on_interrupt() {
  [ "$stopping" -eq 1 ] && return
  stopping=1
  echo
  say "stopping (graceful: rank 0 drains, then every rank exits)"
  stop_server; rc=$?
  [ -n "${tailer:-}" ] && { sleep 0.3; kill "$tailer" 2>/dev/null; }
  say "server exited with status $rc"
  exit "$rc"
}
trap on_interrupt INT TERM HUP

# Wait for rank 0's line "loraserve: listening on HOST:PORT".
addr=""
deadline=$((SECONDS + START_TIMEOUT))
while [ -z "$addr" ]; do
  addr=$(sed -n 's/.*loraserve: listening on \([^ ]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$addr" ] && break
  if ! kill -0 "$launcher" 2>/dev/null; then show_log; die "the server exited before listening"; fi
  if [ "$SECONDS" -ge "$deadline" ]; then show_log; stop_server; die "not listening after ${START_TIMEOUT} s"; fi
  sleep 0.2
done
say "listening on $addr"

say "sample Generate: prompt '$PROMPT', 24 new tokens, greedy"
if ! "$PYTHON" scripts/generate.py --addr "$addr" --wait-ready 120 --prompt "$PROMPT" --max-new-tokens 24; then
  show_log
  stop_server
  die "the sample request failed"
fi

if [ "${DEMO_ONESHOT:-0}" = 1 ]; then
  say "DEMO_ONESHOT: stopping the server"
  stop_server; rc=$?
  [ "$rc" -eq 0 ] || { show_log; die "server exited with status $rc"; }
  say "server stopped cleanly"
  rm -f "$log"
  exit 0
fi

say "serving on $addr; try: $PYTHON scripts/generate.py --addr $addr --prompt 'Hello' --stream"
say "Ctrl-C to stop. Server log follows."
tail -n +1 -f --pid="$launcher" "$log" &
tailer=$!
while :; do
  wait "$launcher"; rc=$?
  kill -0 "$launcher" 2>/dev/null || break
done
[ "$stopping" -eq 1 ] || say "server exited with status $rc"
exit "$rc"
