"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC 2011).

A uniform is a pure function of a 64-bit key and a 128-bit counter, so a sampled token does
not depend on the batch it is in, the thread that draws it or the process: the sampler keys
each row by its seed and puts ``(step, row, draw)`` in the counter. Same constants and round
function as NumPy's ``Philox`` bit generator and Random123 (``philox4x32``, 10 rounds).
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@kernel
def philox4x32(c0, c1, c2, c3, k0, k1):
    """The four 32-bit outputs (as uint64) for counter ``(c0, c1, c2, c3)`` and key ``(k0, k1)``.

    Every argument is a uint64 holding a 32-bit value.
    """
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0 = p0 >> _S32
        lo0 = p0 & _MASK
        hi1 = p1 >> _S32
        lo1 = p1 & _MASK
        c0, c1, c2, c3 = (hi1 ^ c1 ^ k0) & _MASK, lo1, (hi0 ^ c3 ^ k1) & _MASK, lo0
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@kernel
def uniform(seed, step, row, draw):
    """A float64 uniform in ``[0, 1)`` (53 random bits) for key ``seed`` and counter
    ``(step, row, draw)``; all four are uint64 (``step`` and ``seed`` use 64 bits, ``row`` and
    ``draw`` the low 32 each)."""
    k0 = seed & _MASK
    k1 = seed >> _S32
    o0, o1, _o2, _o3 = philox4x32(step & _MASK, step >> _S32, row & _MASK, draw & _MASK, k0, k1)
    hi = o0 >> np.uint64(5)  # 27 bits
    lo = o1 >> np.uint64(6)  # 26 bits
    return (np.float64(hi) * 67108864.0 + np.float64(lo)) * (1.0 / 9007199254740992.0)
