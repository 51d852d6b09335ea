"""Compiled kernels (Cython + OpenMP). Private: use :mod:`cnn.functional`, which validates."""
