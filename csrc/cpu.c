/*
 * cpu.c -- which SIMD builds of the hot loops this CPU runs (internal.h's dispatch).
 *
 * On x86 with GCC or Clang the streaming sgemm (sgemm_small.c) and the accumulator
 * update (corr.c) are also compiled for AVX2+FMA and AVX-512F through
 * __attribute__((target)); the widest level the CPU and OS support is called, and
 * the default build stays portable (no -march). Elsewhere only CS_SIMD_PLAIN exists.
 * Nothing is computed here, so there is no formula and no numerical choice; the
 * builds of one loop agree bit for bit because nothing is contracted into FMAs
 * (internal.h) unless a loop asks for fmaf() itself.
 */
#include <stdint.h>

#include "internal.h"

int cs_simd_supported(int level)
{
    if (level == CS_SIMD_PLAIN) return 1;
#if defined(CS_X86_DISPATCH)
    /* libgcc fills the feature bits in a constructor, before any call can reach here;
     * they include the OS's support for the wider registers (XGETBV) */
    if (!__builtin_cpu_supports("fma") || !__builtin_cpu_supports("avx2")) return 0;
    if (level == CS_SIMD_AVX2) return 1;
    if (level == CS_SIMD_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

/* No cached result: the checks read a bitmask that libgcc filled at load time, and a
 * cache written here would race between threads. */
int cs_simd_best(void)
{
    for (int level = CS_SIMD_AVX512; level > CS_SIMD_PLAIN; --level)
        if (cs_simd_supported(level)) return level;
    return CS_SIMD_PLAIN;
}
