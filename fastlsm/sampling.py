"""Fused token sampling with logprobs, and speculative-draft verification.

Processors run in Hugging Face generate's order, each exactly as its HF class computes it:

====  =====================  ==================================================================
step  parameter              effect on the row (``v`` = logit)
====  =====================  ==================================================================
1     ``token_bitmask``      ``v = -inf`` where bit ``j % 32`` of word ``j // 32`` is 0
2     ``logit_bias``         ``v += bias[j]``
3     ``repetition_penalty`` tokens in ``history``: ``v * rp`` if ``v < 0`` else ``v / rp``
                             (``RepetitionPenaltyLogitsProcessor``)
4     ``frequency_penalty``, tokens in ``history``: ``v -= fp * count + pp`` (OpenAI)
      ``presence_penalty``
5     ``temperature``        ``v / T``; ``T == 0``: greedy (argmax, lowest id on ties)
6     ``top_k``              keep ``v >= `` the k-th largest (``TopKLogitsWarper``; ties kept)
7     ``top_p``              keep the smallest top set of mass ``>= top_p``
                             (``TopPLogitsWarper``; equal logits: higher ids first)
8     ``min_p``              drop ``p < min_p * max(p)`` (``MinPLogitsWarper``)
9     ``typical_p``          keep the tokens nearest the entropy, mass ``>= typical_p``
                             (``TypicalLogitsWarper``)
====  =====================  ==================================================================

Every filter keeps at least one token (HF's ``min_tokens_to_keep=1``). The token is then
drawn by inverse CDF over the kept tokens in id order, with one float64 uniform from
Philox4x32-10 keyed by ``(seed, step, row)``: the same seed gives the same token in any batch,
with any thread count, in any process.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from . import _jit
from ._dtypes import fast_dtype, float_logits, kernel_view, logits_array, result_dtype
from ._kernels import sampling as _k
from ._kernels import sampling_params as _sp
from ._validate import float_array, int_array, int_array_of_shape, readable


class SampleOutput(NamedTuple):
    """Result of :func:`sample` (``B`` rows; without the row axis for 1-D logits)."""

    tokens: np.ndarray
    """int64 ``[B]``: the sampled token of each row."""
    logprobs: np.ndarray
    """``[B]``: the sampled tokens' log-probabilities (the logits' dtype; float32 for 16-bit)."""
    top_tokens: np.ndarray | None
    """int64 ``[B, num_logprobs]``, best first, ties to the lower id (None if not asked)."""
    top_logprobs: np.ndarray | None
    """``[B, num_logprobs]``: their log-probabilities."""
    token_id_logprobs: np.ndarray | None
    """``[B, M]``: log-probabilities of ``logprob_token_ids`` (None if not asked)."""


class VerifyOutput(NamedTuple):
    """Result of :func:`verify_draft`."""

    num_accepted: np.ndarray
    """int64 ``[B]``: how many draft tokens were accepted (0..k)."""
    tokens: np.ndarray
    """int64 ``[B, k+1]``: the accepted draft tokens, then one corrected or bonus token,
    then -1 padding (``num_accepted + 1`` tokens per row are valid)."""


_SCALAR_TYPES = (int, float, np.integer, np.floating)


def _per_row(value, name: str, nb: int, *, integer: bool = False):
    """A scalar parameter as a Python number, a ``[B]`` one as a float64 (or int64) array."""
    if isinstance(value, _SCALAR_TYPES) and not isinstance(value, (bool, np.bool_)):
        if integer and not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer scalar or a [B] array, got {value!r}")
        return int(value) if integer else float(value)
    a = np.asarray(value)
    if a.dtype.kind not in ("iu" if integer else "iuf") or a.dtype == np.bool_:
        kind = "integer" if integer else "real"
        raise TypeError(f"{name} must be a {kind} scalar or a [B] array, got {a.dtype}")
    if a.ndim == 0:
        return _per_row(a.item(), name, nb, integer=integer)
    if a.shape != (nb,):
        raise ValueError(f"{name} must be a scalar or an array of shape [{nb}], got {a.shape}")
    return a.astype(np.int64 if integer else np.float64)


def _check(ok, name: str, what: str, a) -> None:
    """Raise unless ``ok`` (a bool for a scalar ``a``, a bool array for an array ``a``)."""
    if isinstance(ok, (bool, np.bool_)):
        if not ok:
            raise ValueError(f"{name} must be {what}, got {a!r}")
        return
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be {what}, got {a[i]!r} (row {i})")


def _params(nb: int, temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
            frequency_penalty, presence_penalty) -> np.ndarray:
    """The ``[B, NPARAM]`` float64 parameter table, every value checked by the one compiled
    check C uses too (:func:`fastlsm._kernels.sampling_params.check_params`)."""
    given = dict(zip(_PARAMS, (temperature, top_k, top_p, min_p, typical_p, repetition_penalty,
                               frequency_penalty, presence_penalty)))
    vals = {n: _per_row(given[n], n, nb, integer=n == "top_k") for _, n, _, _ in _sp.PARAMS}
    out = np.full((max(nb, 1), _k.NPARAM), _sp.NEUTRAL)  # no rows: the scalars still checked
    for col, name, _, _ in _sp.PARAMS:
        if nb or not isinstance(vals[name], np.ndarray):
            out[:, col] = vals[name]
    bad = int(_sp.check_params(out))
    if bad >= 0:
        row, _, name, _, what = _sp.describe(bad)
        a = vals[name]
        got = f"{a[row]!r} (row {row})" if isinstance(a, np.ndarray) else repr(a)
        raise ValueError(f"{name} must be {what}, got {got}")
    return out[:nb]


def _ids(x, name: str, shape_hint: str, nv: int, *, padding: bool) -> np.ndarray:
    """Token ids as C-contiguous int64, each in ``[0, V)`` (or -1 when ``padding``)."""
    a = int_array(x, name).astype(np.int64)
    lo = -1 if padding else 0
    bad = np.argwhere((a < lo) | (a >= nv))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        what = "-1 (padding) or a token id in" if padding else "a token id in"
        raise ValueError(
            f"{name}{list(at)} = {int(a[at])}: each entry of {name} {shape_hint} must be "
            f"{what} [0, {nv})"
        )
    return np.ascontiguousarray(a)


def _history(history, nb: int, nv: int) -> np.ndarray:
    if history is None:
        return np.zeros((nb, 0), np.int64)
    h = int_array(history, "history")
    if h.ndim != 2 or h.shape[0] != nb:
        raise ValueError(f"history must have shape [B={nb}, L] (-1 = padding), got {h.shape}")
    return _ids(h, "history", "[B, L]", nv, padding=True)


def _bias(logit_bias, nb: int, nv: int) -> np.ndarray | None:
    if logit_bias is None:
        return None
    if isinstance(logit_bias, dict):
        dense = np.zeros((1, nv), np.float64)
        for key, val in logit_bias.items():
            try:
                j = operator.index(key)
            except TypeError:
                raise TypeError(f"logit_bias keys must be token ids (int), got {key!r}") from None
            if not 0 <= j < nv:
                raise ValueError(f"logit_bias has token id {j}, outside the vocabulary [0, {nv})")
            dense[0, j] = float(val)
    else:
        dense = float_array(logit_bias, "logit_bias").astype(np.float64)
        if dense.shape == (nv,):
            dense = dense.reshape(1, nv)
        elif dense.shape != (nb, nv):
            raise ValueError(
                f"logit_bias must have shape [V={nv}] or [B={nb}, V], or be a dict "
                f"{{token_id: bias}}; got {dense.shape}"
            )
    if not np.all(np.isfinite(dense) | (dense == -np.inf)):
        raise ValueError("logit_bias must hold finite values or -inf (never NaN or +inf)")
    return np.ascontiguousarray(dense)


def _bitmask(token_bitmask, lead: tuple, nv: int) -> np.ndarray | None:
    if token_bitmask is None:
        return None
    m = np.asarray(token_bitmask)
    words = (nv + 31) // 32
    if m.dtype == np.uint32:
        m = m.view(np.int32)
    if m.dtype != np.int32:
        raise TypeError(
            f"token_bitmask must be int32 (xgrammar / llguidance layout), got {m.dtype}"
        )
    want = lead + (words,)
    if m.shape != want and m.shape == lead[:1] + (words,):
        m = np.broadcast_to(m[:, None, :], want)
    if m.shape != want:
        raise ValueError(
            f"token_bitmask must have shape {list(want)} (ceil(V / 32) = {words} words per "
            f"row, bit j % 32 of word j // 32 = token j allowed), got {m.shape}"
        )
    return readable(np.ascontiguousarray(m))


def _random(seed, step, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Philox keys and counters: ``(seed[row], step[row])`` for per-row seeds, ``(seed, step,
    row index)`` for a scalar seed."""
    seeds = _per_row(seed, "seed", nb, integer=True)
    steps = _per_row(step, "step", nb, integer=True)
    _check(seeds >= 0, "seed", ">= 0", seeds)
    _check(steps >= 0, "step", ">= 0", steps)
    per_row = isinstance(seeds, np.ndarray)
    ctr = np.zeros(nb, np.uint64) if per_row else np.arange(nb, dtype=np.uint64)
    return (np.full(nb, seeds, np.uint64) if not per_row else seeds.astype(np.uint64),
            np.full(nb, steps, np.uint64) if not isinstance(steps, np.ndarray)
            else steps.astype(np.uint64), ctr)


_PARAMS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
           "frequency_penalty", "presence_penalty")
"""The per-row sampling parameters, in the order of ``_params``' arguments."""


def _row_inputs(nb: int, nv: int, lead: tuple, vals: tuple, history, logit_bias,
                token_bitmask, seed, step) -> tuple:
    """Everything a sampling kernel takes besides the logits, checked: ``(params, history,
    bias, mask, seeds, steps, counters)``; an absent bias or mask is an empty array (one
    kernel type per dtype)."""
    table = _params(nb, *vals)
    hist = _history(history, nb, nv)
    bias = _bias(logit_bias, nb, nv)
    mask = _bitmask(token_bitmask, lead, nv)
    seeds, steps, ctr = _random(seed, step, nb)
    bias = np.zeros((1, 0), np.float64) if bias is None else bias
    mask = np.zeros(lead + (0,), np.int32) if mask is None else mask
    return table, hist, bias, mask, seeds, steps, ctr


_NUMBER = (int, float)
_TABLES: dict = {}  # (rows, the parameters' values) -> their checked [rows, NPARAM] table
_TABLES_MAX = 64
_COUNTERS: dict = {}  # rows -> the Philox counters of a scalar seed (their row indices)
_NO_IDS = np.zeros((1, 0), np.int64)
_NO_BIAS = np.zeros((1, 0), np.float64)
_NO_HISTORY: dict = {}  # rows -> an empty history [rows, 0]
_NO_MASK: dict = {}  # rows -> an empty bitmask [rows, 0]
_NO_TOPS: dict = {}  # rows -> empty top tokens and logprobs [rows, 0]


def _table(nb: int, vals: tuple) -> np.ndarray | None:
    """The parameter table of scalar parameters (Python ``int`` / ``float``; ``top_k`` an
    ``int``), built and checked by :func:`_params` once per ``(rows, values)`` and then
    reused (the kernels only read it; values that compare equal give the same table:
    ``1`` and ``1.0``, and ``0.0`` and ``-0.0``, which every check and filter treats
    alike). ``vals``: in the order of :data:`_PARAMS`. None for any other kind of
    parameter."""
    for v in vals:
        if type(v) not in _NUMBER:
            return None
    if type(vals[1]) is not int:
        return None
    key = (nb, *vals)
    table = _TABLES.get(key)
    if table is None:
        table = _params(nb, *vals)  # raises the general path's errors
        if len(_TABLES) >= _TABLES_MAX:
            _TABLES.clear()
        _TABLES[key] = table
    return table


def _cached(cache: dict, nb: int, make):
    a = cache.get(nb)
    if a is None:
        a = cache[nb] = make(nb)
    return a


def _fast_sample(logits, vals, history, logit_bias, token_bitmask, seed, step, num_logprobs,
                 logprob_token_ids, logprobs_mode) -> SampleOutput | None:
    """The common :func:`sample` call with little Python work, or None (the general path
    then takes it, and raises its errors): C-contiguous aligned float32/float64 logits,
    scalar parameters (:func:`_table`), ``int`` seed and step, an optional history (checked
    by :func:`_history`), no bias, bitmask or named tokens. The same kernel on the same
    arrays as the general path: the same bits."""
    if type(logits) is not np.ndarray or not fast_dtype(logits.dtype):
        return None
    if logit_bias is not None or token_bitmask is not None or logprob_token_ids is not None:
        return None
    if type(seed) is not int or type(step) is not int or type(num_logprobs) is not int:
        return None
    flags = logits.flags
    if not (flags.c_contiguous and flags.aligned) or logits.ndim not in (1, 2):
        return None
    single = logits.ndim == 1
    x2 = kernel_view(logits.reshape(1, -1) if single else logits)
    nb, nv = x2.shape
    if not (nb and nv and 0 <= num_logprobs <= nv and 0 <= seed < 1 << 63
            and 0 <= step < 1 << 63) or logprobs_mode not in ("raw", "processed"):
        return None
    table = _table(nb, vals)
    if table is None:
        return None
    if history is None:
        hist = _cached(_NO_HISTORY, nb, lambda n: np.zeros((n, 0), np.int64))
    else:
        if single:
            history = np.asarray(history).reshape(1, -1)
        hist = _history(history, nb, nv)
    ctr = _cached(_COUNTERS, nb, lambda n: np.arange(n, dtype=np.uint64))
    mask = _cached(_NO_MASK, nb, lambda n: np.zeros((n, 0), np.int32))
    key = np.empty((2, nb), np.uint64)  # Philox: (seed, step, row index)
    key[0] = seed
    key[1] = step
    rows, serial, split = _plan(x2)
    args = (x2, _NO_BIAS, mask, hist, table, key[0], key[1], ctr, logprobs_mode == "raw", _NO_IDS,
            *_sample_outputs(nb, num_logprobs, 0), split)
    if serial:
        run = _jit.serial_entry(_k.sample_rows, id(logits.dtype), args)  # x2: writeable
        if run is None:
            return None
        run(*args)
    else:
        _launch_sample(args, rows)
    return _sample_result(args, result_dtype(logits.dtype), single, num_logprobs, False)


def _launch_rows(nb: int, nv: int, itemsize: int) -> int:
    """The rows the thread rule (``_jit.launch``) counts for ``[nb, nv]`` logits of
    ``itemsize`` bytes: a single float32/float64 row of ``SPLIT_MIN`` tokens or more counts
    as two, since the kernel then splits its passes over two threads (``split``, see
    :func:`fastlsm._kernels.sampling.sample_rows`). 16-bit rows are not split: measured
    slower split (greedy [1, 128256] bfloat16 137 us against 86 on one thread, AMD Zen 4;
    not yet understood)."""
    return 2 if nb == 1 and itemsize >= 4 and _SPLITS and nv >= _k.SPLIT_MIN else nb


_SPLITS = _jit.workers_spin()  # read once: OpenMP reads its wait policy once too


def _plan(x2: np.ndarray) -> tuple:
    """``(rows, serial, split)`` for the kernel view ``x2``: the rows the thread rule counts
    (:func:`_launch_rows`), whether that gives the serial copy (``_jit.launch``), and the
    kernel's ``split``: ``True`` for a single row counted as two that gets the parallel
    kernel, else ``None`` (another type: the kernels compiled for ``None`` carry no split
    path)."""
    nb, nv = x2.shape
    rows = _launch_rows(nb, nv, x2.dtype.itemsize)
    serial = _jit.one_thread(x2.size, rows)
    return rows, serial, True if rows != nb and not serial else None


@_jit.public
def _launch_sample(args: tuple, rows: int) -> None:
    """Run :func:`fastlsm._kernels.sampling.sample_rows` on ``args`` (whose ``split`` is
    set) with fastlsm's thread count (restored on return)."""
    _jit.launch(_k.sample_rows, args[0].size, rows)(*args)


def _raise_status(status: np.ndarray, where) -> None:
    if not np.count_nonzero(status):  # OK is 0 (count_nonzero: 5x faster than any())
        return
    bad = np.flatnonzero(status != _k.OK)
    i = int(bad[0])
    if status[i] == _k.NO_TOKEN:
        raise ValueError(
            f"{where(i)} has no allowed token: its token_bitmask allows none of the "
            f"vocabulary, or every allowed logit is -inf"
        )
    raise ValueError(f"{where(i)} holds NaN or +inf logits (after bias and penalties)")


def sample(
    logits,
    *,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    frequency_penalty=0.0,
    presence_penalty=0.0,
    history=None,
    logit_bias=None,
    token_bitmask=None,
    seed=0,
    step=0,
    num_logprobs: int = 0,
    logprob_token_ids=None,
    logprobs_mode: str = "raw",
) -> SampleOutput:
    """Sample one token per row, with its logprob, the top alternatives and named tokens'.

    Parameters
    ----------
    logits : array_like, float32, float64, bfloat16 (``ml_dtypes``) or float16, shape [B, V] or [V]
        16-bit rows are read as they are (each widened exactly to float32 in the kernel's
        row buffer: the results of their float32 values).
    temperature, top_k, top_p, min_p, typical_p, repetition_penalty, frequency_penalty, \
presence_penalty : scalar or array [B]
        Per-row sampling parameters, applied in the order of the table in
        ``fastlsm.sampling``. Off values: ``top_k=0``, ``top_p=1``, ``min_p=0``,
        ``typical_p=1``, ``repetition_penalty=1``, penalties 0. ``temperature=0``: greedy.
    history : int array [B, L], optional
        Previous tokens of each row (prompt and generated), ``-1`` as padding: the penalties'
        counts.
    logit_bias : float array [V] or [B, V], or dict {token_id: bias}, optional
    token_bitmask : int32 array [B, ceil(V / 32)], optional
        Allowed tokens (bit ``j % 32`` of word ``j // 32``), as xgrammar and llguidance
        produce them.
    seed, step : int or int array [B]
        Philox key and counter. A scalar seed is combined with the row index; per-row seeds
        are not, so a request keeps its stream wherever it sits in the batch.
    num_logprobs : int
        How many top alternatives to return per row (``top_tokens``, ``top_logprobs``).
    logprob_token_ids : int array [M] or [B, M], optional
        Tokens whose log-probabilities to return (``token_id_logprobs``).
    logprobs_mode : {"raw", "processed"}
        ``"raw"``: under ``log_softmax(logits)``; ``"processed"``: under the distribution
        sampled from (``-inf`` where filtered; a greedy row gives 0 for its token).

    Returns
    -------
    SampleOutput
        ``tokens`` int64, ``logprobs`` / ``top_logprobs`` / ``token_id_logprobs`` in the
        logits' dtype, float32 for 16-bit logits (computed in float64).

    Raises
    ------
    ValueError
        Bad shapes or parameter values, token ids outside ``[0, V)`` (history ``-1`` is
        padding), a row with no allowed token, NaN or ``+inf`` logits.
    TypeError
        Non-float logits, non-integer ids, a bitmask that is not int32.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> out = fastlsm.sample(np.log(np.array([[0.7, 0.2, 0.1]])), temperature=0, num_logprobs=2)
    >>> out.tokens, out.top_tokens, np.exp(out.top_logprobs).round(6)
    (array([0]), array([[0, 1]]), array([[0.7, 0.2]]))
    """
    vals = (temperature, top_k, top_p, min_p, typical_p, repetition_penalty, frequency_penalty,
            presence_penalty)
    fast = _fast_sample(logits, vals, history, logit_bias, token_bitmask, seed, step,
                        num_logprobs, logprob_token_ids, logprobs_mode)
    if fast is not None:
        return fast
    return _sample(logits, vals, history, logit_bias, token_bitmask, seed, step, num_logprobs,
                   logprob_token_ids, logprobs_mode)


@_jit.public
def _sample(logits, vals, history, logit_bias, token_bitmask, seed, step, num_logprobs,
            logprob_token_ids, logprobs_mode) -> SampleOutput:
    """:func:`sample` for every call :func:`_fast_sample` does not take."""
    x = logits_array(logits, "logits")
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must have shape [B, V] or [V], got {x.shape}")
    single = x.ndim == 1
    x2 = np.ascontiguousarray(kernel_view(x.reshape(1, -1) if single else x))
    nb, nv = x2.shape
    if nv == 0:
        raise ValueError("logits have an empty vocabulary axis (V = 0): no token to sample")
    if logprobs_mode not in ("raw", "processed"):
        raise ValueError(f"logprobs_mode must be 'raw' or 'processed', got {logprobs_mode!r}")
    nlp = operator.index(num_logprobs)
    if not 0 <= nlp <= nv:
        raise ValueError(f"num_logprobs must be in [0, V={nv}], got {nlp}")
    if single:
        history = None if history is None else np.asarray(history).reshape(1, -1)
        token_bitmask = None if token_bitmask is None else np.asarray(token_bitmask).reshape(1, -1)
    params, hist, bias, mask, seeds, steps, ctr = _row_inputs(
        nb, nv, (nb,), vals, history, logit_bias, token_bitmask, seed, step)
    if logprob_token_ids is None:
        ids = np.zeros((1, 0), np.int64)
    else:
        ids = _ids(logprob_token_ids, "logprob_token_ids", "[M] or [B, M]", nv, padding=False)
        if ids.ndim == 1:
            ids = ids.reshape(1, -1)
        elif ids.ndim != 2 or ids.shape[0] != nb:
            raise ValueError(
                f"logprob_token_ids must have shape [M] or [B={nb}, M], got {ids.shape}"
            )
    rows, _serial, split = _plan(x2)
    args = (x2, bias, mask, hist, params, seeds, steps, ctr, logprobs_mode == "raw", ids,
            *_sample_outputs(nb, nlp, ids.shape[1]), split)
    if nb:
        _jit.launch(_k.sample_rows, x2.size, rows)(*args)  # serial: the serial copy
    return _sample_result(args, result_dtype(x.dtype), single, nlp,
                          logprob_token_ids is not None)


def _sample_outputs(nb: int, nlp: int, nm: int) -> tuple:
    """The kernel's outputs: tokens, logprobs, top tokens, top logprobs, the named tokens'
    logprobs (float64) and the row statuses (each row's is written). Outputs of size 0 are
    shared (never written, never returned)."""
    if nlp:
        tops = np.empty((nb, nlp), np.int64), np.empty((nb, nlp), np.float64)
    else:
        tops = _cached(_NO_TOPS, nb, lambda n: (np.empty((n, 0), np.int64),
                                               np.empty((n, 0), np.float64)))
    named = np.empty((nb, nm), np.float64) if nm else tops[1]
    return (np.empty(nb, np.int64), np.empty(nb, np.float64), *tops, named,
            np.empty(nb, np.int64))


def _sample_result(args: tuple, dt, single: bool, nlp: int, named: bool) -> SampleOutput:
    """The :class:`SampleOutput` of a finished :func:`fastlsm._kernels.sampling.sample_rows`
    call on ``args``, or its row's error."""
    tokens, logprobs, top_tok, top_lp, id_lp, status = args[10:16]
    _raise_status(status, lambda i: "logits" if single else f"row {i} of logits")
    out = SampleOutput(
        tokens,
        logprobs.astype(dt),
        top_tok if nlp else None,
        top_lp.astype(dt) if nlp else None,
        id_lp.astype(dt) if named else None,
    )
    if single:
        out = SampleOutput(*(None if a is None else a[0] for a in out))
    return out


@_jit.public
def verify_draft(
    target_logits,
    draft_tokens,
    *,
    draft_logits=None,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    frequency_penalty=0.0,
    presence_penalty=0.0,
    history=None,
    logit_bias=None,
    token_bitmask=None,
    seed=0,
    step=0,
) -> VerifyOutput:
    """Verify ``k`` draft tokens against the target model: speculative rejection sampling.

    Position ``i`` accepts draft token ``t`` with probability ``min(1, p(t) / q(t))`` (``p``:
    the target's processed distribution at ``i``, ``q``: the draft's, under the same
    parameters); the first rejection emits a token from ``max(0, p - q)`` normalized and
    stops; when all ``k`` are accepted, a bonus token is drawn from position ``k``. The
    emitted tokens follow the target's processed distribution exactly (Leviathan et al.
    2023, Chen et al. 2023). ``draft_logits=None`` is a deterministic draft (``q`` one-hot):
    accept with probability ``p(t)``, correct from ``p`` without ``t``. A greedy row
    (``temperature == 0``) accepts while the draft equals the target's argmax.

    Parameters
    ----------
    target_logits : float array [B, k+1, V]
    draft_tokens : int array [B, k]
    draft_logits : float array [B, k, V], optional
    temperature ... logit_bias : as in :func:`sample`
        The penalties at position ``i`` count ``history`` and ``draft_tokens[:, :i]``.
    token_bitmask : int32 array [B, ceil(V/32)] or [B, k+1, ceil(V/32)], optional
    seed, step : as in :func:`sample`

    Returns
    -------
    VerifyOutput
        ``num_accepted`` int64 [B], ``tokens`` int64 [B, k+1] padded with -1.
    """
    vals = (temperature, top_k, top_p, min_p, typical_p, repetition_penalty, frequency_penalty,
            presence_penalty)
    t = logits_array(target_logits, "target_logits")
    if t.ndim != 3 or t.shape[1] < 1:
        raise ValueError(f"target_logits must have shape [B, k+1, V], got {t.shape}")
    nb, nk1, nv = t.shape
    nk = nk1 - 1
    if nv == 0:
        raise ValueError("target_logits have an empty vocabulary axis (V = 0)")
    draft = int_array_of_shape(
        draft_tokens, "draft_tokens", (nb, nk), f"target_logits of shape [B, k+1, V] = {t.shape}"
    )
    draft = _ids(draft, "draft_tokens", "[B, k]", nv, padding=False)
    dl = None
    if draft_logits is not None:
        dl = logits_array(draft_logits, "draft_logits")
        if dl.shape != (nb, nk, nv):
            raise ValueError(
                f"draft_logits must have shape [B, k, V] = {[nb, nk, nv]}, got {dl.shape}"
            )
        if dl.dtype != t.dtype:  # mixed dtypes: float32 for 16-bit, then the target's
            t, dl = float_logits(t, "target_logits"), float_logits(dl, "draft_logits")
        dl = np.ascontiguousarray(kernel_view(dl))
    params, hist, bias, mask, seeds, steps, ctr = _row_inputs(
        nb, nv, (nb, nk1), vals, history, logit_bias, token_bitmask, seed, step)
    num_acc = np.zeros(nb, np.int64)
    out = np.full((nb, nk1), -1, np.int64)
    status = np.zeros(nb, np.int64)
    if nb:
        _jit.use_threads(t.size, t.shape[0])
        tv = np.ascontiguousarray(kernel_view(t))  # 16-bit rows are read as they are
        dl = np.zeros((nb, 0, nv), tv.dtype) if dl is None else dl.astype(tv.dtype, copy=False)
        _k.verify_rows(tv, dl, draft, bias, mask, hist, params, seeds, steps, ctr, num_acc,
                       out, status)
        _raise_status(status, lambda i: f"row {i} of target_logits or draft_logits")
    return VerifyOutput(num_acc, out)


__all__ = ["SampleOutput", "VerifyOutput", "sample", "verify_draft"]
