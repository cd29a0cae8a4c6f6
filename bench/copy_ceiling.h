/* The bandwidth ceiling the GPU benchmarks divide by: what a large device-to-device copy reaches on this
 * device, measured in the same run as the figures it scales, so a "fraction of copy bandwidth" is
 * relative to what the machine really does rather than to a datasheet. */
#ifndef LORASERVE_BENCH_COPY_CEILING_H
#define LORASERVE_BENCH_COPY_CEILING_H

/* Bytes read + written per second of ten 2 GiB device-to-device copies on the current device. */
double bench_copy_ceiling(void);

#endif
