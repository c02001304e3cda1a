/*
 * test_build.c -- the build flags keep the core's promise of bit-identical SIMD builds:
 * the compiler must not contract a*b+c into an FMA. This file deliberately does not
 * include internal.h (whose pragma forbids contraction for Clang), so it sees only
 * what the Makefile's CFLAGS give every core file: -ffp-contract=off. A build without
 * it fails here under Clang on any x86-64 CPU with FMA, whether or not the CPU has
 * the AVX-512 that test_corr's SIMD-build comparison needs to show the difference.
 */
#include "check.h"

#if defined(__GNUC__) && defined(__x86_64__)
/* a target with FMA, like the core's AVX2+FMA and AVX-512 builds */
__attribute__((target("avx2,fma"), noinline))
static double mul_add_fma_target(double a, double b, double c)
{
    return a * b + c;
}
#endif

static void test_no_contraction(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (!__builtin_cpu_supports("fma") || !__builtin_cpu_supports("avx2")) {
        fprintf(stderr, "test_build: no FMA on this CPU, contraction probe skipped\n");
        return;
    }
    /* a b = 1 - 2^-60 exactly: rounded to double it is 1, so a*b + c is 0 when the
     * product is rounded first and -2^-60 when fused */
    volatile double a = 1.0 + ldexp(1.0, -30), b = 1.0 - ldexp(1.0, -30), c = -1.0;
    const double got = mul_add_fma_target(a, b, c);
    CHECK(got == 0.0);
    if (got != 0.0) fprintf(stderr, "  a*b+c was fused into an FMA (got %.17g): build with -ffp-contract=off\n", got);
#endif
}

int main(void)
{
    test_no_contraction();
    return check_summary("test_build");
}
