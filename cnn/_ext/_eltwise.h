/* Elementwise passes over one contiguous run of n values, one definition per float type and
 * kernel clone (see _simd.h). Each output value depends on the values at its own index alone,
 * with one IEEE operation (a compare-select or one addition), so every clone, and any split
 * of the run over threads, gives the same bits as NumPy's np.maximum(z, 0) and np.add.
 */
#ifndef CNN_ELTWISE_H
#define CNN_ELTWISE_H

#include <stddef.h>

#include "_simd.h"

#define CNN_DEFINE_ELTWISE(ISA, SFX, T)                                                        \
/* out = max(z, 0) as np.maximum(z, 0): z <= 0 (also -0.0) gives +0.0; a NaN fails the test    \
   and passes through with its bits, as in NumPy */                                            \
CNN_ATTR(ISA) static void cnn_relu_##SFX##_##ISA(const T *restrict z, T *restrict out,        \
                                                 ptrdiff_t n) {                                \
    for (ptrdiff_t i = 0; i < n; i++) { const T v = z[i]; out[i] = v <= (T)0 ? (T)0 : v; }    \
}                                                                                              \
                                                                                               \
/* out = a + b */                                                                              \
CNN_ATTR(ISA) static void cnn_add_##SFX##_##ISA(const T *restrict a, const T *restrict b,     \
                                                T *restrict out, ptrdiff_t n) {                \
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] + b[i];                                    \
}                                                                                              \
                                                                                               \
/* acc += b (acc and b never overlap) */                                                       \
CNN_ATTR(ISA) static void cnn_add_into_##SFX##_##ISA(T *restrict acc, const T *restrict b,    \
                                                     ptrdiff_t n) {                            \
    for (ptrdiff_t i = 0; i < n; i++) acc[i] = acc[i] + b[i];                                  \
}                                                                                              \
                                                                                               \
/* out = max(a + b, 0): the sum rounded to T first, then the ReLU above */                     \
CNN_ATTR(ISA) static void cnn_add_relu_##SFX##_##ISA(const T *restrict a, const T *restrict b,\
                                                     T *restrict out, ptrdiff_t n) {           \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        const T v = a[i] + b[i];                                                               \
        out[i] = v <= (T)0 ? (T)0 : v;                                                         \
    }                                                                                          \
}

CNN_FOR_EACH_ISA(CNN_DEFINE_ELTWISE, f, float)
CNN_FOR_EACH_ISA(CNN_DEFINE_ELTWISE, d, double)
#define cnn_relu_f CNN_DISPATCH(cnn_relu_f)
#define cnn_relu_d CNN_DISPATCH(cnn_relu_d)
#define cnn_add_f CNN_DISPATCH(cnn_add_f)
#define cnn_add_d CNN_DISPATCH(cnn_add_d)
#define cnn_add_into_f CNN_DISPATCH(cnn_add_into_f)
#define cnn_add_into_d CNN_DISPATCH(cnn_add_into_d)
#define cnn_add_relu_f CNN_DISPATCH(cnn_add_relu_f)
#define cnn_add_relu_d CNN_DISPATCH(cnn_add_relu_d)

#endif
