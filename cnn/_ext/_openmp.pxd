# Helpers so that one source builds with or without OpenMP (scikit-learn's pattern):
# without -fopenmp, `prange` runs serially and these stubs stand in for omp.h.
cdef extern from *:
    """
    #ifdef _OPENMP
        #include <omp.h>
        #define CNN_OPENMP_PARALLELISM_ENABLED 1
    #else
        #define CNN_OPENMP_PARALLELISM_ENABLED 0
        #define omp_get_thread_num() 0
        #define omp_get_max_threads() 1
    #endif
    """
    bint CNN_OPENMP_PARALLELISM_ENABLED
    int omp_get_thread_num() noexcept nogil
    int omp_get_max_threads() noexcept nogil
