# SLO attainment against the number of adapters at the table rate; bench/plot.sh passes dir, fmt, series.
if (fmt eq 'svg') { set terminal svg size 800,500 dynamic font 'sans,12' } else { set terminal pngcairo size 800,500 font 'sans,11' }
set output dir.'/slo_vs_n.'.fmt
set title 'SLO attainment (first token < 6 s) vs number of adapters, at the table rate'
set xlabel 'adapters n'
set ylabel 'SLO attainment'
set logscale x
set xrange [0.7:*]
set yrange [0:1.05]
set grid
set key bottom left
plot for [s in series] dir.'/throughput_'.s.'.dat' using 1:5 with linespoints lw 2 pt 7 title s
