"""Shared by the C ABI tests: one library build per session, hosts, bitwise references.

The library is built from a snapshot of the package (copied into a temporary directory), so
the library, its hosts and their references run the sources of the session's start even if
the working tree changes meanwhile; it shares the session's kernel cache.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


def _snapshot():
    """Copy the package and capi/ now, while this process imports the package: the library
    then runs the very kernels the Python API here runs, and the hosts are the sources of
    the same moment, even if the working tree changes during the session."""
    root = tempfile.mkdtemp(prefix="fastlsm-capi-src-")
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(
        os.path.join(ROOT, "fastlsm"), os.path.join(root, "fastlsm"),
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    shutil.copytree(os.path.join(ROOT, "capi"), os.path.join(root, "capi"), symlinks=True,
                    ignore=shutil.ignore_patterns("build", "target"))
    return root


SNAPSHOT = _snapshot() if GCC else None
CAPI = os.path.join(SNAPSHOT or ROOT, "capi")  # Makefile, examples/, fuzz/
EXAMPLES = os.path.join(CAPI, "examples")


def _run(cmd, *, env=None, timeout=240, check=True, cwd=None):
    """Run ``cmd`` in an empty environment (plus ``env``), in ``cwd``; return the
    CompletedProcess (an AssertionError with its output when ``check`` and it failed)."""
    full = ["env", "-i", *[f"{k}={v}" for k, v in (env or {}).items()], *cmd]
    proc = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited with {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-4000:]}"
        )
    return proc


_BUILT: dict = {}
_BUILD: dict = {}


def start_build():
    """Start building the library from the snapshot in a background process (once).

    With a cold kernel cache the build compiles every C entry point (about 5 minutes on two
    cores); ``tests/conftest.py`` starts it as soon as the session knows C tests will run and
    runs those tests last, so the build overlaps the Python tests instead of adding to them.
    """
    if _BUILD or GCC is None:
        return
    tmp = tempfile.mkdtemp(prefix="fastlsm-capi-build-")
    atexit.register(shutil.rmtree, tmp, True)
    # The session's own kernel cache, shared: the kernels the Python tests compile are loaded
    # by the build and by the hosts' references, and the reverse (the cache is keyed by the
    # package's sources, which the snapshot copies; Numba replaces index files atomically,
    # so concurrent writers at worst compile a kernel twice). Measured (Zen 4, 2 cores): a
    # cold build compiles for 427 s, 236 s after the Python suite.
    from fastlsm import _jit

    cache = os.path.dirname(_jit.cache_dir())
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": SNAPSHOT,
        "FASTLSM_CACHE_DIR": cache,
    }
    out = os.path.join(tmp, "lib")
    log = open(os.path.join(tmp, "build.log"), "w+")  # noqa: SIM115 (read after the wait)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastlsm.capi", "install", "--prefix", out],
        cwd=SNAPSHOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    atexit.register(lambda: proc.poll() is None and proc.kill())  # an interrupted session
    _BUILD.update(proc=proc, log=log, env=env, out=out, tmp=tmp)


def wait_for_build() -> None:
    """Return when the background build (:func:`start_build`) has ended, or at once if none
    was started (from any thread: :func:`build_capi` reports its outcome)."""
    proc = _BUILD.get("proc")
    if proc is not None:
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            pass


def build_capi(tmp_path_factory):
    """The library (built in the background by :func:`start_build`) and every example
    compiled against it (once per session, whichever test module asks first)."""
    if _BUILT:
        return _BUILT
    start_build()
    proc, log, env = _BUILD["proc"], _BUILD["log"], _BUILD["env"]
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    if proc.returncode != 0:
        raise AssertionError(f"build failed ({proc.returncode}):\n{log.read()[-8000:]}")
    tmp = tmp_path_factory.mktemp("capi")
    src, out = SNAPSHOT, _BUILD["out"]
    flags = subprocess.run(
        [sys.executable, "-m", "fastlsm.capi", "flags", "--prefix", out],
        cwd=src, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    exes, compile_errors = {}, {}
    for name in sorted(os.listdir(EXAMPLES)):
        if not name.endswith(".c"):
            continue
        stem = name[:-2]
        for variant, extra in (("", []), ("_asan", ["-g", "-fsanitize=address",
                                                   "-fno-omit-frame-pointer"])):
            if variant and stem != "log_softmax":
                continue
            exe = str(tmp / f"{stem}{variant}")
            cc = subprocess.run(
                [GCC, "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", *extra,
                 os.path.join(EXAMPLES, name), "-o", exe, *flags, "-lm", "-lpthread"],
                capture_output=True, text=True, check=False,
            )
            if cc.returncode == 0:
                exes[stem + variant] = exe
            else:
                compile_errors[stem + variant] = cc.stderr
    _BUILT.update({"dir": out, "src": src, "exes": exes, "errors": compile_errors,
                   "flags": flags, "env": env, "tmp": tmp, "lib": os.path.join(out, "lib"),
                   "include": os.path.join(out, "include")})
    return _BUILT


def _exe(capi, name):
    if name not in capi["exes"]:
        raise AssertionError(f"{name}.c did not compile:\n{capi['errors'].get(name)}")
    return capi["exes"][name]


def _parse(stdout):
    """``name v1 v2 ...`` lines of hexadecimal floats -> {name: float64 array}."""
    out = {}
    for line in stdout.splitlines():
        name, *values = line.split()
        try:
            out[name] = np.array([float.fromhex(v) if "x" in v else float(v) for v in values])
        except ValueError:
            continue
    return out


def assert_bitwise(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    np.testing.assert_array_equal(nan_a, nan_e)
    bits = {4: np.uint32, 8: np.uint64}[actual.dtype.itemsize]
    np.testing.assert_array_equal(actual[~nan_a].view(bits), expected[~nan_e].view(bits))


_REFERENCE_SCRIPT = """
import pickle, sys
import numpy as np
import pytest
import fastlsm

def table_model(table, dtype):
    return lambda ids, parents: table[ids.shape[1] % table.shape[0]][ids[:, -1]].astype(dtype)

calls = pickle.load(sys.stdin.buffer)
results = []
for name, args, kwargs in calls:
    if name == "beam_search":
        args = (table_model(*args[0]),) + tuple(args[1:])
    results.append(getattr(fastlsm, name)(*args, **kwargs))
pickle.dump(results, sys.stdout.buffer)
"""


def reference(capi, calls):
    """Results of ``fastlsm.<name>(*args, **kwargs)`` for each call, computed in a Python
    process that runs the library's snapshot of the package with the library's kernel cache.

    The reference runs the sources the library was built from, whatever happens to the
    working tree meanwhile. Its kernels are loaded from the cache or compiled, as they come:
    compiled and cache-loaded kernels give the same bits (``tests/test_determinism.py``), and
    a difference here would be a determinism bug, not one of the C ABI.
    """
    import pickle

    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE_SCRIPT], input=pickle.dumps(calls),
        env=capi["env"], capture_output=True, timeout=300, check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(proc.stderr.decode()[-4000:])
    return pickle.loads(proc.stdout)


