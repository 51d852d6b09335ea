"""The C signatures of _pool22.h that more than one module calls (the training max-pool's plane
rule: cnn/_ext/_pool.pyx's pooling layer and _fused.pyx's training conv + pool), declared once."""

cdef extern from "_pool22.h":
    void cnn_maxpool_plane_arg_f(const float *x, Py_ssize_t H, Py_ssize_t W, float *y,
                                 Py_ssize_t *arg, Py_ssize_t OH, Py_ssize_t OW, int kh, int kw,
                                 int sh, int sw, int pt, int pl) noexcept nogil
    void cnn_maxpool_plane_arg_d(const double *x, Py_ssize_t H, Py_ssize_t W, double *y,
                                 Py_ssize_t *arg, Py_ssize_t OH, Py_ssize_t OW, int kh, int kw,
                                 int sh, int sw, int pt, int pl) noexcept nogil
