"""The C ABI: ``libfastlsm.so`` + ``fastlsm.h``, a cffi embedding library over the kernels.

``python -m fastlsm.capi install --prefix P`` writes ``P/include/fastlsm.h``,
``P/lib/libfastlsm.so*``, ``P/lib/pkgconfig/fastlsm.pc`` and ``P/lib/cmake/fastlsm/`` and warms
the kernel cache; ``python -m fastlsm.capi flags --prefix P [--cflags|--libs]`` prints the
flags a C host compiles and links with. The ABI is declared in ``fastlsm.h`` (this package's
copy; the repository's ``capi/fastlsm.h`` links to it); its C side is ``_runtime.c`` and
``_capi.c``, the table of Numba entry points they call is ``_entries.ENTRIES``, the build is
``_build.py``.
"""

from ._build import build, cflags, default_out_dir, flags, header_path, libs

__all__ = ["build", "cflags", "default_out_dir", "flags", "header_path", "libs"]
