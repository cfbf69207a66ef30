"""The C ABI's facts are written once: fastlsm.h against the entry table, one header file.

Fast checks that need no compiler: the header declares exactly the prototypes of
``fastlsm.capi._entries`` (whose table also generates the C side's typedefs and names), the
repository's ``capi/fastlsm.h`` is the package's header, and the generated C table is
consistent with the registered cfuncs. No numbers are computed, so no float64 reference
(``tests/naive.py``) is needed.
"""

from __future__ import annotations

import os
import re

from fastlsm.capi import _build, _entries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _normalize(proto: str) -> str:
    s = re.sub(r"\s+", " ", proto).strip()
    s = re.sub(r"\s*([(),*])\s*", r"\1", s)
    return s.replace(",", ", ")


def header_prototypes(text: str) -> list[str]:
    """Every ``FASTLSM_API ...;`` declaration of a header, comments removed, normalized."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = re.sub(r"^\s*#.*$", " ", text, flags=re.MULTILINE)
    return [_normalize(m) for m in re.findall(r"FASTLSM_API\s+([^;{]+?)\s*;", text)]


def test_header_declares_exactly_the_table():
    with open(_build.header_path()) as f:
        declared = header_prototypes(f.read())
    expected = [_normalize(p) for p in _entries.public_prototypes()]
    assert len(declared) == len(set(declared)), "a prototype is declared twice"
    missing = sorted(set(expected) - set(declared))
    extra = sorted(set(declared) - set(expected))
    assert not missing and not extra, f"not in fastlsm.h: {missing}\nnot in the table: {extra}"


def test_header_parser_sees_a_mismatch():
    proto = "int fastlsm_log_softmax_f32(const float *x, float *out, int64_t rows, int64_t cols)"
    text = f"/* c */\nFASTLSM_API {proto.replace('int64_t cols', 'int cols')};\n"
    assert header_prototypes(text) != [_normalize(proto)]
    assert header_prototypes(f"FASTLSM_API {proto};") == [_normalize(proto)]


def test_one_header_file():
    repo = os.path.join(ROOT, "capi", "fastlsm.h")
    assert os.path.samefile(repo, _build.header_path())
    assert not os.path.islink(_build.header_path()), "the package copy is the source of truth"


def test_generated_table_names_every_registered_entry():
    table = _entries.c_table()
    names = re.search(r"entry_names\[E_COUNT\] = \{(.*)\};", table).group(1)
    keys = [k.strip().strip('"') for k in names.split(",")]
    registered = {key.rsplit("_", 1)[0] for key, _, _ in _entries.variants()}
    assert set(keys) == registered and len(keys) == len(registered)
    for key in keys:
        assert f"(*{key}_fn)(" in table and f"K_{key}" in table


def test_numba_signature_follows_the_c_signature():
    sig = _entries.numba_sig("int64_t (const float *x, const void *t, int32_t n, double d)")
    assert str(sig) == "(float32*, void*, int32, float64) -> int64"


def test_version_macros_match_the_package():
    import fastlsm

    with open(_build.header_path()) as f:
        text = f.read()
    major, minor, patch = (int(p) for p in fastlsm.__version__.split("."))
    for name, value in (("MAJOR", major), ("MINOR", minor), ("PATCH", patch)):
        assert re.search(rf"#define FASTLSM_VERSION_{name} {value}\b", text)
    assert f'#define FASTLSM_VERSION_STRING "{fastlsm.__version__}"' in text
    real, soname, link = _build.library_names()
    assert (real, soname, link) == (f"libfastlsm.so.{major}.{minor}.{patch}",
                                    f"libfastlsm.so.{major}", "libfastlsm.so")


def test_generated_header_part_is_current():
    path = _build.header_path()
    assert _entries.update_header(path, write=False), (
        "fastlsm.h's generated part is stale: run `python -m fastlsm.capi header --update`")
    with open(path) as f:
        text = f.read()
    block = text[text.index(_entries.HEADER_BEGIN):text.index(_entries.HEADER_END)]
    assert all(len(line) <= 100 for line in block.splitlines())


def test_every_row_entry_takes_a_row_stride():
    """The table decides it once: a _strided variant, or a struct field (ABI policy)."""
    kinds = {e.name: e.stride for e in _entries.ENTRIES if e.dtypes}
    assert kinds == {"log_softmax": "arg", "softmax": "arg", "logsumexp": "arg",
                     "cross_entropy": "options", "cross_entropy_probs": "options",
                     "nll_loss": "options", "sequence_logprobs": "arg", "beam_step": "arg",
                     "sample": "params", "verify_draft": "params", "beam_advance": ""}
    protos = _entries.strided_prototypes()
    assert len(protos) == 4 * (3 + 2 + 1)  # dtypes x (normalizers, sequence i64/i32, beam)
    assert ("int fastlsm_log_softmax_strided_bf16(const uint16_t *x, uint16_t *out, "
            "int64_t rows, int64_t cols, int64_t row_stride)") in protos
    assert any(p.startswith("int fastlsm_sequence_logprobs_i32_strided_f16(") for p in protos)
    with open(_build.header_path()) as f:
        header = f.read()
    assert "int64_t row_stride;" in header.split("} fastlsm_sample_params;")[0][-1500:]


def test_sampling_parameter_messages_come_from_the_kernel_table():
    from fastlsm._kernels import sampling_params

    table = _entries.c_table()
    for _, name, array, what in sampling_params.PARAMS:
        assert f'{{"{name}", "{array}", "{what}"}}' in table
