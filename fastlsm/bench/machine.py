"""Facts about the machine and the software a benchmark ran on (``fastlsm info`` too)."""

from __future__ import annotations

import os
import platform

import numpy as np

import fastlsm


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_isa() -> str:
    """The widest x86 vector extension the CPU reports (``avx512f``, ``avx2``...), or ``""``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    for isa in ("avx512f", "avx2", "avx", "sse4_2"):
                        if isa in flags:
                            return isa
                    break
    except OSError:
        pass
    return ""


def memory_bytes() -> dict:
    """``{"total", "available"}`` in bytes from /proc/meminfo (empty elsewhere)."""
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    info["total" if key == "MemTotal" else "available"] = (
                        int(rest.split()[0]) * 1024
                    )
    except OSError:
        pass
    return info


def machine_info() -> dict:
    """CPU model and vector ISA, cores (all and usable), memory, platform, Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "isa": vector_isa(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory": memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions(torch_module: object | None = None) -> dict:
    """Versions of fastlsm and of what it runs on (``None`` for what is not installed).

    PyTorch's version comes from the module when given, else from the installed package's
    metadata: asking never imports PyTorch (``--no-torch`` keeps its OpenMP runtime out).
    """
    import importlib.metadata

    import cffi
    import llvmlite
    import numba

    torch_version = getattr(torch_module, "__version__", None)
    if torch_version is None:
        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "fastlsm": fastlsm.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": np.__version__,
        "cffi": cffi.__version__,
        "torch": torch_version,
    }


def threading_layer() -> str | None:
    """Numba's threading layer in use (None before any parallel kernel has run)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None
