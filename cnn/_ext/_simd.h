/* Portable hints for the compiler's vectoriser, shared by the C parts of the kernels. */
#ifndef CNN_SIMD_H
#define CNN_SIMD_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* "The pointers of this loop never overlap": for loops over many streams, where the vectoriser
 * would otherwise give up on the run-time alias checks it needs. */
#if defined(__clang__)
#define CNN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define CNN_IVDEP _Pragma("GCC ivdep")
#else
#define CNN_IVDEP
#endif

/* Kernel clones. On x86-64 with GNU C, every hand-vectorised kernel is compiled three times:
 * for AVX-512F, for AVX2 and portable (the default build has no -march). The copy run is picked
 * once per process by cnn_kernel_isa(): the best the CPU has, in the order avx512f, avx2,
 * default, capped by the environment variable CNN_KERNEL_ISA ("avx512f", "avx2" or "default";
 * for tests and A/B timing). Define CNN_NO_TARGET_CLONES to build the portable copy only.
 *
 * All copies do the same operations in the same order, so results do not depend on the copy
 * taken: AVX-512F implies FMA, and gcc would contract a*b + c into one rounding, so every copy
 * is compiled with fp-contract=off (also the default one, for -march=native builds).
 *
 * Use: define the kernel with a macro DEF(ISA, A, B) (two arguments of its own, e.g. a name
 * suffix and the float type; no variadic forwarding, which MSVC's preprocessor gets wrong)
 * whose function is
 *     CNN_ATTR(ISA) static ret NAME_##ISA(...)
 * instantiate it with CNN_FOR_EACH_ISA(DEF, A, B), then
 *     #define NAME CNN_DISPATCH(NAME)
 * so that callers keep calling NAME(...). */
#define CNN_ISA_DEFAULT 0
#define CNN_ISA_AVX2 1
#define CNN_ISA_AVX512F 2

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
    && !defined(CNN_NO_TARGET_CLONES)
#define CNN_HAVE_CLONES 1
#define CNN_ATTR_avx512f __attribute__((target("avx512f"), optimize("fp-contract=off")))
#define CNN_ATTR_avx2 __attribute__((target("avx2"), optimize("fp-contract=off")))
#define CNN_ATTR_default __attribute__((optimize("fp-contract=off")))
#define CNN_FOR_EACH_ISA(DEF, A, B) DEF(avx512f, A, B) DEF(avx2, A, B) DEF(default, A, B)
#define CNN_DISPATCH(name)                                                                 \
    (cnn_kernel_isa() >= CNN_ISA_AVX512F ? name##_avx512f                                  \
     : cnn_kernel_isa() >= CNN_ISA_AVX2 ? name##_avx2 : name##_default)
/* For kernels whose AVX-512F copy measured slower: only the AVX2 clone and the portable copy.
 * CNN_DISPATCH_NO512: CPUs with AVX-512F run the AVX2 clone. CNN_DISPATCH_NO512_PORTABLE:
 * they run the portable copy (the AVX2 clone only on CPUs with AVX2 but not AVX-512F). */
#define CNN_FOR_EACH_ISA_NO512(DEF, A, B) DEF(avx2, A, B) DEF(default, A, B)
#define CNN_DISPATCH_NO512(name) \
    (cnn_kernel_isa() >= CNN_ISA_AVX2 ? name##_avx2 : name##_default)
#define CNN_DISPATCH_NO512_PORTABLE(name) \
    (cnn_kernel_isa() == CNN_ISA_AVX2 ? name##_avx2 : name##_default)
#else
#define CNN_HAVE_CLONES 0
#if defined(__GNUC__) && !defined(__clang__)
#define CNN_ATTR_default __attribute__((optimize("fp-contract=off")))
#else
#define CNN_ATTR_default
#endif
#define CNN_FOR_EACH_ISA(DEF, A, B) DEF(default, A, B)
#define CNN_DISPATCH(name) name##_default
#define CNN_FOR_EACH_ISA_NO512(DEF, A, B) DEF(default, A, B)
#define CNN_DISPATCH_NO512(name) name##_default
#define CNN_DISPATCH_NO512_PORTABLE(name) name##_default
#endif
#define CNN_ATTR(ISA) CNN_ATTR_##ISA

/* The clone level of this process (CNN_ISA_*). Computed on the first call; each extension
 * module calls it once at import, before any thread runs a kernel. */
static inline int cnn_kernel_isa(void) {
    static int level = -1;
    if (level < 0) {
        int best = CNN_ISA_DEFAULT, cap = CNN_ISA_AVX512F;
#if CNN_HAVE_CLONES
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) best = CNN_ISA_AVX512F;
        else if (__builtin_cpu_supports("avx2")) best = CNN_ISA_AVX2;
#endif
        const char *env = getenv("CNN_KERNEL_ISA");
        if (env && strcmp(env, "avx2") == 0) cap = CNN_ISA_AVX2;
        else if (env && strcmp(env, "default") == 0) cap = CNN_ISA_DEFAULT;
        level = best < cap ? best : cap;
    }
    return level;
}

#endif
