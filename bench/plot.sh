#!/usr/bin/env bash
# Plots of a benchmark sweep from its JSON alone (bench/slora_sweep.sh calls it when the GPU machine has
# gnuplot; otherwise run it anywhere afterwards): DIR/plots/{throughput_vs_n,first_token_vs_rate,
# slo_vs_rate,slo_vs_n}.{png,svg} and DIR/table.md (bench/slora_report.py).
# usage: bench/plot.sh DIR      (DIR holds results/*.json; needs python3 and gnuplot, e.g. gnuplot-nox)
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd); dir=$1
python3 "$here/slora_report.py" "$dir" || exit 1
command -v gnuplot > /dev/null || { echo "plot.sh: gnuplot not found (table.md written)" >&2; exit 1; }
p=$dir/plots
series=""
for s in S1 S2; do [ -s "$p/throughput_$s.dat" ] && [ "$(grep -vc '^#' "$p/throughput_$s.dat")" -gt 0 ] && series="$series $s"; done
base=$(grep -v '^#' "$p/base.dat" 2>/dev/null | awk 'NR == 1 {print $1}')
rc=0
for fmt in png svg; do
  if [ -n "$series" ]; then
    for g in slora_throughput slora_slo_n; do
      gnuplot -e "dir='$p'; fmt='$fmt'; series='${series# }'; base=${base:--1}" "$here/$g.gnuplot" || rc=1
    done
  fi
  if [ "$(grep -vc '^#' "$p/rate_s1_n100.dat" 2>/dev/null)" -gt 0 ]; then
    gnuplot -e "dir='$p'; fmt='$fmt'" "$here/slora_latency.gnuplot" || rc=1
  fi
done
ls "$p"/*.png "$p"/*.svg 2>/dev/null | sed 's/^/plot: /'
exit $rc
