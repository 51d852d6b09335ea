/* One float type T (suffix CNN_WINO_SFX) of the Winograd transforms: the functions built once
 * and every kernel clone of the vectorised ones (see _simd.h). Included by _winograd.h only. */
#define CNN_WINO_ISA default
#define CNN_WINO_SHARED
#include "_winograd_impl.h"
#undef CNN_WINO_SHARED
#undef CNN_WINO_ISA
#if CNN_HAVE_CLONES
#define CNN_WINO_ISA avx2
#include "_winograd_impl.h"
#undef CNN_WINO_ISA
#define CNN_WINO_ISA avx512f
#include "_winograd_impl.h"
#undef CNN_WINO_ISA
#endif
