"""The C ABI: ``libfastlsm.so`` + ``fastlsm.h``, a cffi embedding library over the kernels.

``python -m fastlsm.capi build --out DIR`` writes ``DIR/libfastlsm.so``, ``DIR/fastlsm.h`` and
``DIR/fastlsm.pc`` and warms the kernel cache; ``python -m fastlsm.capi flags --out DIR``
prints the flags a C host compiles and links with. The ABI itself is declared in
``fastlsm.h`` (repository: ``capi/fastlsm.h``); its C side is ``_capi.c``, the Numba entry
points it calls are in ``_entries.py``, the build in ``_build.py``.
"""

from ._build import build, default_out_dir, flags, header_path

__all__ = ["build", "default_out_dir", "flags", "header_path"]
