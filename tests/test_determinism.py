"""Same input, same bits: in every process, whether kernels were compiled or loaded from cache.

Regression test for a bug found while building the kernels: sum reductions left to LLVM's
vectorizer (a reassociating add) were vectorized differently in different compiled copies
of the same row function, so a float64 row sum could differ by an ulp between the process
that compiled a kernel and the processes that later loaded it from Numba's cache. Sums are
now written out in a fixed order (``_kernels.rows.block_sum``).

No float64 reference is needed here (``tests/naive.py``): only the bits of processes are
compared; the values are checked against the references in the other test modules.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading

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
    # Lowest priority: in the background (start) the processes take only the CPU the rest
    # of the suite leaves; nothing here is timed.
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    out = subprocess.run(
        [*nice, sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


_JOB: dict = {}


def start(after=None) -> None:
    """Run the two processes of :func:`test_fresh_compile_and_cache_load_give_the_same_bits`
    in a background thread (once), after ``after()`` returns (``tests/conftest.py``: after
    the C library's background build, whose core is then free). The first process compiles
    every normalizer and loss kernel from an empty cache (about a minute): in the background
    it overlaps the Python tests instead of adding to them."""
    if _JOB:
        return
    cache = tempfile.mkdtemp(prefix="fastlsm-determinism-")
    atexit.register(shutil.rmtree, cache, True)

    def job():
        try:
            if after is not None:
                after()
            compiled = _run(cache)  # empty cache: every kernel is compiled in this process
            filled = bool(os.listdir(cache))
            _JOB["result"] = compiled, filled, _run(cache)  # everything loaded from the cache
        except BaseException as e:  # reported by the test
            _JOB["error"] = e

    _JOB["thread"] = threading.Thread(target=job, name="fastlsm-determinism", daemon=True)
    _JOB["thread"].start()


def test_fresh_compile_and_cache_load_give_the_same_bits():
    start()  # a no-op when the session started it
    _JOB["thread"].join(timeout=1300)
    if "error" in _JOB:
        raise _JOB["error"]
    assert "result" in _JOB, "the two processes did not end within 1300 s"
    compiled, filled, loaded = _JOB["result"]
    assert filled, "the first process should have filled the cache"
    assert len(compiled) == 64
    assert compiled == loaded
