# Helpers so that one source builds with or without OpenMP (scikit-learn's pattern):
# without -fopenmp, `prange` runs serially and these stubs stand in for omp.h.
cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define CNN_OPENMP_PARALLELISM_ENABLED 1
        /* Cython's prange inside a parallel block ends with `nowait`: a loop whose results
           every thread reads next needs this explicit barrier (called by all the threads of
           the region, or none). */
        static inline void cnn_omp_barrier(void) {
            _Pragma("omp barrier")
        }
    #else
        #define CNN_OPENMP_PARALLELISM_ENABLED 0
        #define omp_get_thread_num() 0
        #define omp_get_max_threads() 1
        static inline void cnn_omp_barrier(void) {}
    #endif
    """
    bint CNN_OPENMP_PARALLELISM_ENABLED
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil
    void cnn_omp_barrier() noexcept nogil
