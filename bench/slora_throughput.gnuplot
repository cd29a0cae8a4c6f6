# Throughput against the number of adapters n at the sweep's table rate (bench/plot.sh passes dir, fmt,
# series: the non-empty throughput_*.dat files, and base: the base model's req/s or -1).
if (fmt eq 'svg') { set terminal svg size 800,500 dynamic font 'sans,12' } else { set terminal pngcairo size 800,500 font 'sans,11' }
set output dir.'/throughput_vs_n.'.fmt
set title 'loraserve throughput vs number of adapters (S-LoRA synthetic workload)'
set xlabel 'adapters n'
set ylabel 'throughput (req/s)'
set logscale x
set xrange [0.7:*]
set yrange [0:*]
set grid
set key bottom left
set label 1 'names beyond the distinct pool are symlinks (see sweep.json)' at graph 0.02, graph 0.95 font ',9'
plot for [s in series] dir.'/throughput_'.s.'.dat' using 1:2 with linespoints lw 2 pt 7 title s, \
     (base > 0 ? base : 1/0) with lines dt 2 lw 2 title 'base model (n = 0)'
