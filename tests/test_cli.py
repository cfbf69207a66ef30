"""The ``fastlsm`` command: ``info`` and ``--version`` (``bench``: tests/test_bench.py).

The commands run in subprocesses (``python -m fastlsm``) exactly as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import fastlsm
from fastlsm import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False


def run_fastlsm(*args, timeout=240, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "fastlsm", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert proc.returncode == 0, f"fastlsm {' '.join(args)} failed:\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------- info, --version


def test_version():
    proc = run_fastlsm("--version")
    assert proc.stdout.strip() == f"fastlsm {fastlsm.__version__}"


def test_info_text_lists_versions_threads_and_cache():
    out = run_fastlsm("info").stdout
    fields = dict(line.split(":", 1) for line in out.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    for key in (
        "fastlsm",
        "numba",
        "llvmlite",
        "numpy",
        "cffi",
        "torch",
        "threading layer",
        "threads",
        "cpu",
        "cores",
        "memory",
        "compile cache",
    ):
        assert key in fields, f"missing {key!r} in:\n{out}"
    assert fields["fastlsm"] == fastlsm.__version__
    assert fields["threading layer"] in ("omp", "tbb")  # never workqueue
    assert int(fields["threads"].split()[0]) >= 1


def test_info_data():  # what `fastlsm info --json` prints, in process (saves a start-up)
    data = cli.info()
    assert json.loads(json.dumps(data)) == data
    assert data["versions"]["fastlsm"] == fastlsm.__version__
    assert data["versions"]["numpy"] == np.__version__
    assert (data["versions"]["torch"] is not None) == HAVE_TORCH
    assert data["threading_layer"] in ("omp", "tbb")
    assert 1 <= data["threads"] <= data["max_threads"]
    assert data["cores"] >= 1 and data["usable_cores"] >= 1
    assert data["memory"]["total"] > 0
    assert data["cache_dir"] == fastlsm._jit.cache_dir()
