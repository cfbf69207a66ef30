"""Same input, same bits: in every process, whether kernels were compiled or loaded from cache.

Regression test for a bug found while building the kernels: sum reductions left to LLVM's
vectorizer (a reassociating add) were vectorized differently in different compiled copies
of the same row function, so a float64 row sum could differ by an ulp between the process
that compiled a kernel and the processes that later loaded it from Numba's cache. Sums are
now written out in a fixed order (``_kernels.rows.block_sum``).

No float64 reference is needed here (``tests/naive.py``): only the bits of processes are
compared; the values are checked against the references in the other test modules.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import hashlib
    import numpy as np
    import fastlsm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)) * 5
    x[3, ::7] = -np.inf
    t = rng.integers(0, 1000, 64)
    h = hashlib.sha256()
    for dt in (np.float64, np.float32):
        y = x.astype(dt)
        for r in (
            fastlsm.log_softmax(y),
            fastlsm.softmax(y),
            fastlsm.logsumexp(y),
            fastlsm.cross_entropy(np.nan_to_num(y, neginf=-50), t, reduction="none"),
            fastlsm.cross_entropy_with_grad(np.nan_to_num(y, neginf=-50), t).grad,
            fastlsm.sequence_logprobs(y.reshape(8, 8, 1000), t.reshape(8, 8))[0],
        ):
            h.update(np.ascontiguousarray(r).tobytes())
    print(h.hexdigest())
    """
)


def _run(cache_dir):
    env = dict(os.environ, FASTLSM_CACHE_DIR=str(cache_dir))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_fresh_compile_and_cache_load_give_the_same_bits(tmp_path):
    compiled = _run(tmp_path)  # empty cache: every kernel is compiled in this process
    assert os.listdir(tmp_path), "the first process should have filled the cache"
    loaded = _run(tmp_path)  # everything loaded from the cache
    assert len(compiled) == 64
    assert compiled == loaded
