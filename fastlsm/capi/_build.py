"""Build libfastlsm.so: a cffi embedding library whose exported functions are written in C.

Four steps, as in cffi's embedding demo:
1. ``cdef``: the few C functions the embedded init code calls to register entry points, and
   ``fastlsm__load``, Python called by C on an entry point's first use;
2. ``embedding_init_code``: Python run once at start-up, which imports the package and
   defines ``fastlsm__load``: it compiles (loads from the cache) the Numba ``@cfunc`` s of
   one entry point and registers their addresses (a host loads only what it calls);
3. ``set_source``: ``_runtime.c`` + ``_capi.c`` (the ABI of ``fastlsm.h``), preceded by the
   build machine's paths as C constants and the entry-point table generated from
   ``_entries.ENTRIES`` (and, between the two, the beam-search config messages generated
   from ``_kernels.decoder.config``), linked with libpython (with an rpath to it), soname
   ``libfastlsm.so.<major>``;
4. ``compile``, then a check: a small C program calls the library in an empty environment.

The output is an installation prefix: ``include/fastlsm.h``, ``lib/libfastlsm.so.M.m.p``
(links ``libfastlsm.so.M`` and ``libfastlsm.so``), ``lib/pkgconfig/fastlsm.pc`` and
``lib/cmake/fastlsm/`` (``find_package(fastlsm)``, imported target ``fastlsm::fastlsm``).
The paths baked in are the building interpreter's: build on the machine that runs the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

MODULE_NAME = "_fastlsm_cffi"
LIBRARY = "libfastlsm.so"
C_SOURCES = ("_runtime.c", "_capi.c")
HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(HERE))  # the directory holding fastlsm/

CDEF = """
    static void fastlsm__register(const char *name, void *fn);
    static void fastlsm__ready(const char *version, int max_threads, int num_threads,
                               int64_t serial_work, void *set_num_threads);
    static void fastlsm__init_failed(const char *message);
    extern "Python" int fastlsm__load(const char *name);
"""

SMOKE_C = r"""
#include <stdio.h>
#include "fastlsm.h"
int main(void) {
    float x[3] = {1.0f, 2.0f, 3.0f}, y[3];
    int st = fastlsm_log_softmax_f32(x, y, 1, 3);
    if (st != FASTLSM_OK) {
        fprintf(stderr, "%s: %s\n", fastlsm_strerror(st), fastlsm_last_error());
        return 1;
    }
    printf("ok %.6f\n", y[0]);
    return 0;
}
"""


def header_path() -> str:
    """``fastlsm.h``, shipped in the package (``capi/fastlsm.h`` in the repository links to it)."""
    return os.path.join(HERE, "fastlsm.h")


def version() -> tuple[int, int, int]:
    """The package version as ``(major, minor, patch)``: the library's version."""
    from .. import __version__

    major, minor, patch = (int(p) for p in __version__.split(".")[:3])
    return major, minor, patch


def library_names() -> tuple[str, str, str]:
    """``(file, soname, link name)``: ``libfastlsm.so.M.m.p``, ``libfastlsm.so.M``, ``.so``."""
    major, minor, patch = version()
    return f"{LIBRARY}.{major}.{minor}.{patch}", f"{LIBRARY}.{major}", LIBRARY


def default_out_dir() -> str:
    """Where ``build`` writes when no ``--out`` is given: ``<fastlsm cache root>/capi``."""
    from .. import _jit

    return os.path.join(os.path.dirname(_jit.cache_dir()), "capi")


def c_string(s: str) -> str:
    """``s`` as a C string literal (UTF-8, non-printable bytes as octal escapes)."""
    out = []
    for b in s.encode():
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127 and c != "?":
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _search_path() -> list[str]:
    """The embedded interpreter's module search path: exactly fastlsm's package root, the
    standard library and this environment's site-packages. Never a working directory (for
    ``python -m``, ``sys.path[0]`` is the builder's) nor ``PYTHONPATH`` entries."""
    paths = sysconfig.get_paths()
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
                                     "installed_base": sys.base_prefix,
                                     "installed_platbase": sys.base_exec_prefix})
    candidates = [PACKAGE_ROOT, base["stdlib"], base["platstdlib"],
                  os.path.join(base["platstdlib"], "lib-dynload"), paths["purelib"],
                  paths["platlib"]]
    out: list[str] = []
    for p in candidates:
        p = os.path.abspath(p)
        if os.path.isdir(p) and p not in out:
            out.append(p)
    return out


def _python_facts() -> dict:
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise RuntimeError(
            f"{sys.executable} has no shared libpython (built without --enable-shared); "
            "the C ABI needs one: use a Python built with --enable-shared (pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared, or a distribution's python3)"
        )
    return {
        "libdir": libdir,
        "soname": soname,
        "libpython": os.path.join(libdir, soname),
        "lib": f"python{sys.version_info[0]}.{sys.version_info[1]}{sys.abiflags}",
        "pyver": f"{sys.version_info[0]}.{sys.version_info[1]}",
    }


def _beam_constants() -> str:
    """The decoder state machine's constants, taken from the kernel module (one source)."""
    from .._kernels import beam

    names = [n for n in dir(beam) if n.split("_")[0] in ("CFG", "FCFG", "ST", "L", "BEAM")
             or n in ("LAYOUT_SIZE", "HEADER")]
    return "".join(
        f"#define {'' if n.startswith('BEAM_') else 'BEAM_'}{n} {int(getattr(beam, n))}\n"
        for n in sorted(names) if isinstance(getattr(beam, n), int)
    )


def _prelude(py: dict, cache_root: str) -> str:
    from . import _entries

    paths = ", ".join(c_string(p) for p in _search_path())
    return _entries.c_table() + _beam_constants() + textwrap.dedent(
        f"""\
        /* Generated by fastlsm/capi/_build.py on the build machine. */
        #define FASTLSM_BUILD_HOME {c_string(sys.base_prefix)}
        #define FASTLSM_BUILD_EXECUTABLE {c_string(sys.executable)}
        #define FASTLSM_BUILD_LIBPYTHON {c_string(py["libpython"])}
        #define FASTLSM_BUILD_LIBPYTHON_SONAME {c_string(py["soname"])}
        #define FASTLSM_BUILD_PYVER {c_string(py["pyver"])}
        #define FASTLSM_BUILD_CACHE_ROOT {c_string(cache_root)}
        #define FASTLSM_BUILD_PATHS {paths}
        """
    )


def _init_code(cache_root: str) -> str:
    return textwrap.dedent(
        f"""\
        import os
        import sys

        for _p in {_search_path()!r}:  # a Python host may lack them (set in C otherwise)
            if _p not in sys.path:
                sys.path.append(_p)
        # The cache `build` warmed, unless the host chose another.
        os.environ.setdefault("FASTLSM_CACHE_DIR", {cache_root!r})

        from {MODULE_NAME} import ffi, lib

        try:
            from fastlsm.capi import _entries

            _entries.register(ffi, lib)
        except BaseException as _e:
            import traceback

            _msg = "".join(traceback.format_exception_only(type(_e), _e)).strip()
            lib.fastlsm__init_failed(_msg.encode("utf-8", "replace")[:2000])
            raise


        @ffi.def_extern(error=-1)
        def fastlsm__load(name):  # called by C (under its load lock) on an entry's first use
            return _entries.load(ffi, lib, ffi.string(name).decode())
        """
    )


def build(out_dir: str | None = None, *, check: bool = True, verbose: bool = False) -> dict:
    """Build the library into the installation prefix ``out_dir`` (see the module docstring).

    Compiles every kernel entry point first (so the cache is warm for the host's first
    call), then the library, then (``check``) runs a small C program against it in an empty
    environment. Returns the paths written.
    """
    import cffi

    from .. import _jit
    from . import _entries

    out_dir = os.path.abspath(out_dir or default_out_dir())
    inc, lib = os.path.join(out_dir, "include"), os.path.join(out_dir, "lib")
    for d in (inc, os.path.join(lib, "pkgconfig"), os.path.join(lib, "cmake", "fastlsm")):
        os.makedirs(d, exist_ok=True)
    py = _python_facts()
    cache_root = os.path.dirname(_jit.cache_dir())
    real, soname, link = library_names()

    _entries.compile_all()  # warm the cache (and fail early if a kernel does not compile)

    c_source = c_sources()
    header = header_path()

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.embedding_init_code(_init_code(cache_root))
    ffi.set_source(
        MODULE_NAME,
        _prelude(py, cache_root) + c_source,
        include_dirs=[os.path.dirname(header)],
        libraries=[py["lib"], "dl", "pthread"],
        library_dirs=[py["libdir"]],
        extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall", "-Wno-unused-function",
                            "-Wno-format-truncation"],
        extra_link_args=[f"-Wl,-rpath,{py['libdir']}", f"-Wl,-soname,{soname}"],
    )
    with tempfile.TemporaryDirectory(prefix="fastlsm-capi-") as tmp:
        built = ffi.compile(tmpdir=tmp, target="libfastlsm.*", verbose=verbose)
        _replace_file(built, os.path.join(lib, real))  # a running host keeps its mapped copy
    _replace_link(real, os.path.join(lib, soname))
    _replace_link(soname, os.path.join(lib, link))
    header_out = os.path.join(inc, "fastlsm.h")
    _replace_file(header, header_out)
    files = {
        "pkgconfig": (os.path.join(lib, "pkgconfig", "fastlsm.pc"), pkg_config(out_dir)),
        "cmake": (os.path.join(lib, "cmake", "fastlsm", "fastlsmConfig.cmake"),
                  cmake_config(out_dir)),
        "cmake_version": (os.path.join(lib, "cmake", "fastlsm", "fastlsmConfigVersion.cmake"),
                          cmake_version()),
    }
    for path, text in files.values():
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    result = {"library": os.path.join(lib, real), "soname": os.path.join(lib, soname),
              "link": os.path.join(lib, link), "header": header_out,
              **{k: p for k, (p, _) in files.items()}}
    if check:
        _check(out_dir)
    return result


def c_sources() -> str:
    """``_runtime.c``, the generated beam-search config messages, then ``_capi.c``."""
    from . import _entries

    parts = []
    for name in C_SOURCES:
        with open(os.path.join(HERE, name)) as f:
            parts.append(f.read())
    return parts[0] + _entries.beam_config_errors() + parts[1]


def _replace_file(src: str, dst: str) -> None:
    shutil.copyfile(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)  # atomic


def _replace_link(target: str, link: str) -> None:
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def pkg_config(out_dir: str) -> str:
    from .. import __version__

    return textwrap.dedent(
        f"""\
        prefix={out_dir}
        libdir=${{prefix}}/lib
        includedir=${{prefix}}/include

        Name: fastlsm
        Description: Fused log-softmax, cross-entropy and beam-search kernels (C ABI)
        Version: {__version__}
        Cflags: -I${{includedir}}
        Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lfastlsm
        """
    )


def cmake_config(out_dir: str) -> str:
    """``fastlsmConfig.cmake``: the imported target ``fastlsm::fastlsm`` (absolute paths:
    the library cannot be moved, it embeds its build environment's paths)."""
    real, soname, _ = library_names()
    return textwrap.dedent(
        f"""\
        # Generated by `python -m fastlsm.capi install`: find_package(fastlsm) support.
        set(fastlsm_INCLUDE_DIR "{out_dir}/include")
        set(fastlsm_LIBRARY "{out_dir}/lib/{real}")
        if(NOT TARGET fastlsm::fastlsm)
          add_library(fastlsm::fastlsm SHARED IMPORTED)
          set_target_properties(fastlsm::fastlsm PROPERTIES
            IMPORTED_LOCATION "${{fastlsm_LIBRARY}}"
            IMPORTED_SONAME "{soname}"
            INTERFACE_INCLUDE_DIRECTORIES "${{fastlsm_INCLUDE_DIR}}")
        endif()
        set(fastlsm_LIBRARIES fastlsm::fastlsm)
        set(fastlsm_INCLUDE_DIRS "${{fastlsm_INCLUDE_DIR}}")
        """
    )


def cmake_version() -> str:
    """``fastlsmConfigVersion.cmake``: same major version, not older than requested."""
    major, minor, patch = version()
    return textwrap.dedent(
        f"""\
        set(PACKAGE_VERSION "{major}.{minor}.{patch}")
        if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION
           OR NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "{major}")
          set(PACKAGE_VERSION_COMPATIBLE FALSE)
        else()
          set(PACKAGE_VERSION_COMPATIBLE TRUE)
          if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
            set(PACKAGE_VERSION_EXACT TRUE)
          endif()
        endif()
        """
    )


def _built(out_dir: str | None) -> str:
    d = os.path.abspath(out_dir or default_out_dir())
    if not os.path.exists(os.path.join(d, "lib", LIBRARY)):
        raise FileNotFoundError(
            f"no fastlsm C library in {d}: build it first with "
            f"`python -m fastlsm.capi install --prefix {d}`"
        )
    return d


def cflags(out_dir: str | None = None) -> str:
    """Compile flags for a C host using the library built into ``out_dir``."""
    return f"-I{_built(out_dir)}/include"


def libs(out_dir: str | None = None) -> str:
    """Link flags (with an rpath) for a C host using the library built into ``out_dir``."""
    d = _built(out_dir)
    return f"-L{d}/lib -Wl,-rpath,{d}/lib -lfastlsm"


def flags(out_dir: str | None = None) -> str:
    """Compile and link flags for a C host using the library built into ``out_dir``."""
    return f"{cflags(out_dir)} {libs(out_dir)}"


def compiler() -> str:
    """The C compiler: ``$CC``, else Python's, else ``cc``."""
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) or shutil.which("cc") or shutil.which("gcc") or cc


def _check(out_dir: str) -> None:
    with tempfile.TemporaryDirectory(prefix="fastlsm-capi-check-") as tmp:
        src = os.path.join(tmp, "smoke.c")
        exe = os.path.join(tmp, "smoke")
        with open(src, "w") as f:
            f.write(SMOKE_C)
        subprocess.run(
            [compiler(), "-Wall", "-Werror", src, "-o", exe, *flags(out_dir).split()],
            check=True,
        )
        run = subprocess.run(["env", "-i", exe], check=False, capture_output=True, text=True,
                             timeout=600)
        if run.returncode != 0 or not run.stdout.startswith("ok "):
            raise RuntimeError(
                f"the built library failed its check in an empty environment "
                f"(exit {run.returncode}):\n{run.stdout}{run.stderr}"
            )
