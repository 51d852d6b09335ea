/* Portable hints for the compiler's vectoriser, shared by the C parts of the kernels. */
#ifndef CNN_SIMD_H
#define CNN_SIMD_H

#include <stddef.h>
#include <string.h>   /* also defines __GLIBC__ where there is one */

/* "The pointers of this loop never overlap": for loops over many streams, where the vectoriser
 * would otherwise give up on the run-time alias checks it needs. */
#if defined(__clang__)
#define CNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define CNN_IVDEP _Pragma("GCC ivdep")
#else
#define CNN_IVDEP
#endif

/* Memory-bound elementwise loops: on x86-64 with GNU C and glibc (ifunc), also compile an AVX2
 * copy of the function and pick it at load time when the CPU has AVX2. The default build stays
 * portable (no -march). Both copies do the same operations in the same order (no FMA
 * contraction in these loops: they only add, subtract and compare), so results do not depend
 * on the copy taken. Define CNN_NO_TARGET_CLONES to build the portable copy only. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) \
    && !defined(CNN_NO_TARGET_CLONES)
#define CNN_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CNN_TARGET_CLONES
#endif

#endif
