"""Numba kernels of memrec-infer: hashing, MEM-REC and full-table bag lookups.

Installed as ``memrec_infer.kernels``. Every public wrapper validates and allocates; the
``@njit`` kernels behind them do arithmetic only. Imports numpy and numba, nothing else.
"""
