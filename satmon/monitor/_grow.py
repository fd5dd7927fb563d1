"""Buffers grown in place as a series grows: the one capacity rule of the monitor's caches.

The monitor keeps arrays of each growing series (the training rewards and their prefix sums,
each held-out series' steps, values and variances, the shapes' design rows) and writes only
the entries added since the last evaluation. :func:`reserve` gives such a buffer room for the
next entries; the caller writes them.
"""

from __future__ import annotations

import numpy as np


def reserve(buf: np.ndarray, size: int, keep: int, axis: int = -1) -> np.ndarray:
    """``buf`` when it holds ``size`` entries along ``axis``, else a new buffer of twice that
    (at least 16) with ``buf``'s first ``keep`` entries copied; the rest is uninitialised.

    >>> b = reserve(np.zeros((2, 4)), 5, 3)
    >>> b.shape, b[:, :3].tolist()
    ((2, 16), [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """
    if buf.shape[axis] >= size:
        return buf
    shape = list(buf.shape)
    shape[axis] = max(2 * size, 16)
    out = np.empty(shape, dtype=buf.dtype)
    head = [slice(None)] * buf.ndim
    head[axis] = slice(0, keep)
    out[tuple(head)] = buf[tuple(head)]
    return out
