# First-token latency and SLO attainment against the request rate (S1, n = 100); bench/plot.sh passes
# dir and fmt.
if (fmt eq 'svg') { set terminal svg size 800,500 dynamic font 'sans,12' } else { set terminal pngcairo size 800,500 font 'sans,11' }
set output dir.'/first_token_vs_rate.'.fmt
set title 'first-token latency vs request rate (S1, n = 100)'
set xlabel 'request rate R (req/s)'
set ylabel 'first-token latency (s)'
set logscale y
set grid
set key top left
plot dir.'/rate_s1_n100.dat' using 1:2 with linespoints lw 2 pt 7 title 'mean', \
     '' using 1:3 with linespoints lw 2 pt 5 title 'p99', \
     6 with lines dt 2 title 'SLO (6 s)'
set output dir.'/slo_vs_rate.'.fmt
set title 'SLO attainment (first token < 6 s) vs request rate (S1, n = 100)'
unset logscale y
set ylabel 'SLO attainment'
set yrange [0:1.05]
set key bottom left
plot dir.'/rate_s1_n100.dat' using 1:4 with linespoints lw 2 pt 7 title 'SLO attainment', \
     '' using 1:($5/$1) with linespoints lw 2 pt 5 title 'completed / offered'
