/* The CPU's own arithmetic peak: independent multiply-adds in registers, nothing from memory.
 *
 * A library matmul reaches a fraction of this (on the 2-core Zen 4 this project measured on,
 * torch's 4096² matmul: 58-76% in fp32, 78-84% in bf16), so it understates the ceiling a convolution
 * can approach. Prints "fp32 GFLOPS" and, where the CPU has AVX512-BF16, "bf16 GFLOPS", best of
 * three runs, on every OpenMP thread (OMP_NUM_THREADS). A FLOP is a multiply or an add, so one
 * multiply-add counts two: the way a matmul's 2·n³ is counted.
 *
 *   cc -O2 -march=native -fopenmp fma_peak.c -o fma_peak && ./fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define CHAINS 12 /* independent accumulators, enough to cover the latency; the unroll pragmas repeat it */
#define ITERATIONS 100000000L

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define SPLAT _mm512_set1_ps
#define FMA(acc, a, b) _mm512_fmadd_ps(a, b, acc)
#define SUM _mm512_reduce_add_ps
#elif defined(__FMA__)
typedef __m256 vec;
#define LANES 8
#define SPLAT _mm256_set1_ps
#define FMA(acc, a, b) _mm256_fmadd_ps(a, b, acc)
static float SUM(__m256 v) {
    float lanes[8], total = 0;
    _mm256_storeu_ps(lanes, v);
    for (int i = 0; i < 8; i++) total += lanes[i];
    return total;
}
#else
#error "needs FMA (AVX2) or AVX-512"
#endif

static volatile float sink; /* keeps the results alive, so the loops are not optimised away */

/* Seconds for ITERATIONS × CHAINS multiply-add instructions on every thread. */
static double time_fp32(void) {
    double begun = omp_get_wtime();
#pragma omp parallel
    {
        vec acc[CHAINS], a = SPLAT(1.0000001f), b = SPLAT(0.9999999f);
        for (int i = 0; i < CHAINS; i++) acc[i] = SPLAT((float)i);
        for (long it = 0; it < ITERATIONS; it++)
#pragma GCC unroll 12 /* the accumulators then live in registers, not in memory */
            for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], a, b);
        float total = 0;
        for (int i = 0; i < CHAINS; i++) total += SUM(acc[i]);
        sink = total;
    }
    return omp_get_wtime() - begun;
}

#if defined(__AVX512BF16__)
/* vdpbf16ps: 16 fp32 lanes, each adding two bf16 products: 32 multiply-adds per instruction. */
static double time_bf16(void) {
    double begun = omp_get_wtime();
#pragma omp parallel
    {
        __m512 acc[CHAINS];
        __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3f80); /* 1.0 */
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
        for (long it = 0; it < ITERATIONS; it++)
#pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        float total = 0;
        for (int i = 0; i < CHAINS; i++) total += _mm512_reduce_add_ps(acc[i]);
        sink = total;
    }
    return omp_get_wtime() - begun;
}
#endif

static double best_gflops(double (*run)(void), double flop_per_instruction) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double gflops = flop_per_instruction * CHAINS * ITERATIONS * omp_get_max_threads() / run() / 1e9;
        if (gflops > best) best = gflops;
    }
    return best;
}

int main(void) {
    printf("fp32 %.1f\n", best_gflops(time_fp32, 2.0 * LANES));
#if defined(__AVX512BF16__)
    printf("bf16 %.1f\n", best_gflops(time_bf16, 2.0 * 32));
#endif
    return 0;
}
