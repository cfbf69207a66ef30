"""Threads: set_num_threads/get_num_threads, FASTLSM_NUM_THREADS, determinism, concurrent calls.

Shapes here are at least ``_jit.SERIAL_WORK`` elements so that the kernels really run in
parallel (smaller problems run on one thread by design). Results must be bitwise identical
for every thread count, on every call, and when 8 Python threads call at the same time.
No float64 reference is needed here (``tests/naive.py``): results are compared bit for bit
with each other; their values are checked against the references in ``test_normalize.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import naive
import numba
import numpy as np
import pytest

import fastlsm
from fastlsm._jit import SERIAL_WORK

LIMIT = numba.config.NUMBA_NUM_THREADS
FUNCS = ["log_softmax", "softmax", "logsumexp"]
DTYPES = [np.float32, np.float64]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

needs_two_threads = pytest.mark.skipif(LIMIT < 2, reason="Numba's pool has a single thread")


@pytest.fixture(autouse=True)
def restore_thread_count():
    n = fastlsm.get_num_threads()
    yield
    fastlsm.set_num_threads(n)


def run(name, x, axis=-1, **kw):
    return getattr(fastlsm, name)(x, axis, **kw)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def big_input(rng, dtype, shape=(64, 1024)):
    """Logits with masked entries and a few special rows, large enough to run in parallel."""
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    x[rng.random(shape) < 0.1] = -np.inf
    x[3, :] = -np.inf
    x[5, 7] = np.nan
    x[9, 11] = np.inf
    assert x.size >= SERIAL_WORK
    return x


# ----------------------------------------------------------------------------- set / get


def test_get_num_threads_is_in_range():
    n = fastlsm.get_num_threads()
    assert type(n) is int and 1 <= n <= LIMIT


def test_set_then_get():
    for n in range(1, LIMIT + 1):
        fastlsm.set_num_threads(n)
        assert fastlsm.get_num_threads() == n
    fastlsm.set_num_threads(np.int64(1))  # any integer type
    assert fastlsm.get_num_threads() == 1 and type(fastlsm.get_num_threads()) is int


@pytest.mark.parametrize("n", [0, -1, LIMIT + 1, 10**6])
def test_set_num_threads_out_of_range(n):
    fastlsm.set_num_threads(1)
    with pytest.raises(ValueError, match=rf"between 1 and {LIMIT} \(set NUMBA_NUM_THREADS"):
        fastlsm.set_num_threads(n)
    assert fastlsm.get_num_threads() == 1  # unchanged


@pytest.mark.parametrize("n", [1.0, 2.5, "2", None, True, np.True_, np.float64(1.0)], ids=repr)
def test_set_num_threads_not_an_integer(n):
    fastlsm.set_num_threads(1)
    with pytest.raises(TypeError, match=r"set_num_threads\(\) takes an integer, got"):
        fastlsm.set_num_threads(n)
    assert fastlsm.get_num_threads() == 1


@pytest.fixture
def launches(monkeypatch):
    """Records ``(host thread, Numba thread count)`` at every log_softmax kernel launch."""
    from fastlsm._kernels import normalize as kernels

    seen = []
    real = kernels.log_softmax_rows

    def record(*args):
        seen.append((threading.current_thread().name, numba.get_num_threads()))
        return real(*args)

    monkeypatch.setattr(kernels, "log_softmax_rows", record)
    return seen


@needs_two_threads
def test_thread_count_applies_in_every_host_thread_and_is_restored(rng, launches):
    # Numba's count is per host thread; fastlsm applies its global setting before each launch
    # and gives the caller back its own count afterwards.
    x = big_input(rng, np.float32)
    numba.set_num_threads(LIMIT)
    after = {}

    def call(tag):
        before = numba.get_num_threads()
        fastlsm.log_softmax(x)
        after[tag] = (before, numba.get_num_threads())

    for n in (1, 2):
        fastlsm.set_num_threads(n)
        launches.clear()
        call("main")
        t = threading.Thread(target=call, args=("worker",), name="worker")
        t.start()
        t.join()
        assert ("MainThread", n) in launches and ("worker", n) in launches
        assert after["main"] == (LIMIT, LIMIT)
        assert after["worker"][0] == after["worker"][1]
    # below SERIAL_WORK elements a call runs on one thread whatever the setting
    launches.clear()
    fastlsm.log_softmax(x[:2])
    assert launches[0] == ("MainThread", 1) and numba.get_num_threads() == LIMIT


@needs_two_threads
def test_caller_numba_thread_count_is_unchanged_by_every_public_function(rng):
    x = rng.standard_normal((64, 1024))
    t = rng.integers(0, 1024, 64)
    calls = [
        lambda: fastlsm.log_softmax(x), lambda: fastlsm.softmax(x), lambda: fastlsm.logsumexp(x),
        lambda: fastlsm.cross_entropy(x, t), lambda: fastlsm.cross_entropy_with_grad(x, t),
        lambda: fastlsm.nll_loss(x, t),
        lambda: fastlsm.sequence_logprobs(x[None], t[None]),
        lambda: fastlsm.beam_step(x[None], np.zeros((1, 64))),
        lambda: fastlsm.sequence_logprobs(x[None], t[None], top_logprobs=2),
        lambda: fastlsm.sample(x, temperature=0.7, top_p=0.9),
        lambda: fastlsm.verify_draft(x.reshape(8, 8, 1024)[:, :3], t.reshape(8, 8)[:, :2]),
        lambda: fastlsm.cross_entropy(x, t + 5000),  # raises: the count is restored too
    ]
    seen_in_step = []

    def step(ids, parents):
        seen_in_step.append(numba.get_num_threads())
        return np.zeros((len(ids), 40000))  # large enough for a parallel launch

    calls.append(lambda: fastlsm.beam_search(step, [[1]], num_beams=2, max_new_tokens=3,
                                             eos_token_id=None))
    for mine, theirs in ((1, 2), (2, 1)):
        fastlsm.set_num_threads(mine)
        numba.set_num_threads(theirs)
        for call in calls:
            try:
                call()
            except ValueError:
                pass
            assert numba.get_num_threads() == theirs
        assert set(seen_in_step) == {theirs}  # the user's step_fn sees the user's count
        seen_in_step.clear()
    numba.set_num_threads(LIMIT)


# ----------------------------------------------------------------------------- determinism


@needs_two_threads
@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape, axis",
    [((64, 1024), -1), ((1024, 64), 0), ((8192, 8), -1), ((3, 40000), -1), ((4, 128, 96), 1)],
    ids=str,
)
def test_bitwise_identical_across_thread_counts(name, dtype, shape, axis, rng):
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    x.reshape(-1)[rng.random(x.size) < 0.05] = -np.inf
    assert x.size >= SERIAL_WORK
    results = []
    for n in sorted({1, 2, LIMIT}):
        fastlsm.set_num_threads(n)
        results.append(run(name, x, axis))
    for r in results[1:]:
        assert same_bits(r, results[0])


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_on_repeated_calls(name, dtype, rng):
    x = big_input(rng, dtype)
    first = run(name, x)
    out = np.empty_like(first)
    for _ in range(4):
        assert same_bits(run(name, x), first)
        assert same_bits(run(name, x, out=out), first)


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_calls_from_8_threads_match_serial_calls(rng):
    # 8 host threads, each launching (parallel) kernels on its own input at the same time:
    # the threading layer must be thread-safe (workqueue would abort the process).
    tasks = []
    for i in range(8):
        dtype = DTYPES[i % 2]
        name = FUNCS[i % 3]
        shape = [(64, 1024), (8, 5000), (512, 64), (3, 7)][i % 4]  # the last one is serial
        x = (3 * rng.standard_normal(shape)).astype(dtype)
        x[0, 0] = -np.inf
        tasks.append((name, x))
    serial = [run(name, x) for name, x in tasks]

    def work(i):
        name, x = tasks[i]
        return i, run(name, x)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, [i for _ in range(6) for i in range(8)]))
    assert len(results) == 48
    for i, got in results:
        assert same_bits(got, serial[i]), tasks[i][0]


def test_concurrent_calls_writing_into_their_own_out(rng):
    xs = [rng.standard_normal((64, 1024)) for _ in range(8)]
    want = [fastlsm.log_softmax(x) for x in xs]
    outs = [np.empty_like(x) for x in xs]
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()  # start together
        for _ in range(5):
            fastlsm.log_softmax(xs[i], out=outs[i])
            if not same_bits(outs[i], want[i]):
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(work, range(8)))


# ----------------------------------------------------------------------------- environment

_SCRIPT = """
import numba, numpy as np, fastlsm
from fastlsm._kernels import normalize as kernels
seen = []
real = kernels.log_softmax_rows
kernels.log_softmax_rows = lambda *a: (seen.append(numba.get_num_threads()), real(*a))[1]
x = np.zeros((64, 1024), np.float32)
y = fastlsm.log_softmax(x)
assert np.all(y == np.float32(-np.log(1024.0)))
print(fastlsm.get_num_threads(), seen[0], numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS)
"""


def _run_python(code, **env):
    full = dict(os.environ)
    for var in ("FASTLSM_NUM_THREADS", "FASTLSM_THREADING_LAYER", "NUMBA_THREADING_LAYER"):
        full.pop(var, None)
    full.update(env)
    full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", code], env=full, cwd=REPO, capture_output=True, text=True,
        timeout=300, check=False,
    )


@pytest.mark.parametrize("n", sorted({1, LIMIT}))
def test_env_var_sets_the_initial_thread_count(n):
    proc = _run_python(_SCRIPT, FASTLSM_NUM_THREADS=str(n))
    assert proc.returncode == 0, proc.stderr
    # get_num_threads() reports it, the kernels ran with it, the caller's count is Numba's
    assert proc.stdout.split() == [str(n), str(n), "True"]


_FIRST_CALL = (
    "import numpy as np, fastlsm\n"
    "try:\n"
    "    fastlsm.log_softmax(np.zeros((64, 1024)))\n"
    "except ValueError as e:\n"
    "    print(e)\n"
)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FASTLSM_NUM_THREADS": "two"}, "FASTLSM_NUM_THREADS='two' is not an integer"),
        ({"FASTLSM_THREADING_LAYER": "workqueue"},
         "FASTLSM_THREADING_LAYER='workqueue' is not supported"),
    ],
)
def test_bad_environment_variable_is_a_value_error_at_the_first_call(env, message):
    proc = _run_python(_FIRST_CALL, **env)
    assert proc.returncode == 0, proc.stderr
    assert message in proc.stdout


# ----------------------------------------------------------------------------- threading layer

_LAYER = """
import os, numba, numpy as np
from numba.np.ufunc import parallel
import fastlsm
assert not parallel._is_initialized, "import fastlsm launched Numba's threads"
print(numba.config.THREADING_LAYER)
fastlsm.log_softmax(np.zeros((64, 1024)))
print(numba.threading_layer())
"""


def test_import_sets_no_threading_layer_and_numba_picks_its_default():
    proc = _run_python(_LAYER)
    assert proc.returncode == 0, proc.stderr
    configured, used = proc.stdout.split()
    assert configured == "default" and used in ("omp", "tbb", "workqueue")


def test_fastlsm_threading_layer_variable_applies_when_the_user_chose_none():
    proc = _run_python(_LAYER, FASTLSM_THREADING_LAYER="omp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == "omp"


def test_user_threading_layer_wins_over_fastlsm_variable():
    code = "import numba; numba.config.THREADING_LAYER = 'workqueue'\n" + _LAYER.replace(
        "print(numba.config.THREADING_LAYER)", ""
    )
    proc = _run_python(code, FASTLSM_THREADING_LAYER="omp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["workqueue"]


def test_workqueue_layer_serializes_concurrent_fastlsm_calls():
    # workqueue aborts the process when two host threads launch at once: fastlsm then takes a
    # lock around its own calls, so 8 concurrent callers still get the serial results.
    code = (
        "import numba; numba.config.THREADING_LAYER = 'workqueue'\n"
        "import numpy as np, fastlsm\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "x = np.random.default_rng(0).standard_normal((64, 1024))\n"
        "want = fastlsm.log_softmax(x)\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    res = list(pool.map(lambda _: fastlsm.log_softmax(x), range(64)))\n"
        "print(numba.threading_layer(), all((r == want).all() for r in res))\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["workqueue", "True"]


# ----------------------------------------------------------------------------- serial copies


class _Spy:
    """Stands in for a parallel kernel: records whether the parallel entry or its serial copy
    (``.serial``, what ``_jit.launch`` gives a one-thread problem) ran."""

    def __init__(self, real):
        self.real, self.seen = real, []

    def __call__(self, *args):
        self.seen.append("parallel")
        return self.real(*args)

    def serial(self, *args):
        self.seen.append("serial")
        return self.real.serial(*args)


@needs_two_threads
@pytest.mark.parametrize("family", ["sequence_logprobs", "beam_step", "beam_search"])
def test_one_thread_problems_run_the_serial_copy(family, rng, monkeypatch):
    from fastlsm._kernels import beam, sequence

    module, name = {"sequence_logprobs": (sequence, "sequence_logprobs_rows"),
                    "beam_step": (beam, "beam_step_rows"),
                    "beam_search": (beam, "beam_search_advance")}[family]
    spy = _Spy(getattr(module, name))
    monkeypatch.setattr(module, name, spy)
    fastlsm.set_num_threads(2)
    for rows, vocab, want in ((1, 50000, "serial"), (2, 100, "serial"), (4, 20000, "parallel")):
        x = rng.standard_normal((rows, vocab))
        spy.seen.clear()
        if family == "sequence_logprobs":
            tok, seq = fastlsm.sequence_logprobs(x[None], np.zeros((1, rows), np.int64))
            np.testing.assert_allclose(tok[0], naive.log_softmax(x)[:, 0], rtol=1e-13)
        elif family == "beam_step":
            scores, _, _ = fastlsm.beam_step(x[None], np.zeros((1, rows)), num_candidates=1)
            assert scores[0, 0] == pytest.approx(naive.log_softmax(x).max(), rel=1e-13)
        else:
            fastlsm.beam_search(lambda ids, parents, x=x: x, [[1]] * (rows // 2 or 1),
                                num_beams=2 if rows > 1 else 1, max_new_tokens=1,
                                eos_token_id=None)
        assert spy.seen == [want], (rows, vocab)
