/* One float type T (suffix CNN_WINO_SFX) of the Winograd transforms: the functions built once
 * and every kernel clone of the vectorised ones (see _simd.h). Included by _winograd.h only. */
#define CNN_WINO_ISA default
#define CNN_WINO_SHARED
#include "_winograd_impl.h"
#undef CNN_WINO_SHARED
#undef CNN_WINO_ISA
/* No AVX-512F clone: on an AVX-512 Xeon its transforms made the 14x14 layer of the DESIGN CNN
 * slower than the AVX2 clone (forward 4.9-5.0 ms vs 4.1-4.5, forward of dw + dx 15.4-16.3 ms
 * vs 11.2-13.4; 64x32x14x14 -> 64, 1 thread, min of 9/7, each clone in its own process, three
 * rounds, quiet machine). CPUs with AVX-512F run the AVX2 clone (CNN_DISPATCH_NO512), whose
 * float32 tile loops of the input and gradient transforms (written with intrinsics, not left to
 * the vectoriser) do switch to their AVX-512F versions: 16 tiles a vector paid, 0.84-0.97x the
 * time of the AVX2 loops on the forward and dx (_winograd.h, CNN_WINO_*_TILES_BEST). */
#if CNN_HAVE_CLONES
#define CNN_WINO_ISA avx2
#if CNN_WINO_FLOAT
#define CNN_WINO_SPLIT_ROW cnn_wino_split_row_f_avx2
#define CNN_WINO_INPUT_TILES CNN_WINO_INPUT_TILES_BEST
#define CNN_WINO_GRAD_TILES CNN_WINO_GRAD_TILES_BEST
#endif
#include "_winograd_impl.h"
#undef CNN_WINO_SPLIT_ROW
#undef CNN_WINO_INPUT_TILES
#undef CNN_WINO_GRAD_TILES
#undef CNN_WINO_ISA
#endif
