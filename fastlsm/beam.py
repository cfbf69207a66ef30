"""Beam search: the fused beam step and a complete decoder with transformers' semantics."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator

import numpy as np

from . import _jit
from ._dtypes import is_half, kernel_view, logits_array, result_dtype
from ._kernels import beam as _k
from ._kernels import bitmask as _bitmask_kernels
from ._kernels.decoder import config as _cfg
from ._kernels.decoder import state as _state
from ._validate import readable


def _integer(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = int(operator.index(value))
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not -(2**62) <= value < 2**62:
        raise ValueError(f"{name}={value} is out of range")
    return value


def _count(value, name: str, minimum: int) -> int:
    value = _integer(value, name)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


@_jit.public
def beam_step(
    logits, beam_scores, *, num_candidates: int | None = None, token_bitmask=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One beam-search step: ``beam_scores + log_softmax(logits)``, top candidates per batch.

    Parameters
    ----------
    logits : array_like, float32, float64, bfloat16 or float16, shape [B, K, V]
        Next-token logits of the ``K`` beams of each of ``B`` batch items.
    beam_scores : array_like, float, shape [B, K]
        Running (summed log-prob) scores of the beams. ``-inf`` marks a dead beam; NaN and
        ``+inf`` are rejected.
    num_candidates : int, optional
        How many candidates to return per batch item, ``1 <= C <= K * V``. Default ``2 * K``
        (capped at ``K * V``), what a decoder needs to keep ``K`` beams alive when up to ``K``
        candidates end with EOS.
    token_bitmask : array_like of int32, shape [B, K, ceil(V / 32)] or [B * K, ceil(V / 32)]
        Constrained decoding (the layout of xgrammar and llguidance): token ``j`` of row
        ``(b, k)`` is allowed when bit ``j % 32`` of word ``j // 32`` is set. A disallowed
        token's log-prob is ``-inf``, after ``log_softmax`` over the whole row, as a logits
        processor in transformers' beam search (processors come after ``log_softmax``);
        allowed tokens keep their log-probs. Every row must allow at least one token.

    Returns
    -------
    scores : ndarray, shape [B, C], the logits' dtype (float32 for 16-bit logits)
        ``beam_scores[b, k] + log_softmax(logits[b, k])[v]``, computed in float64 as
        ``beam + ((x - max) - log(sum))`` and rounded once; descending per row.
    tokens : ndarray of int64, shape [B, C]
    beams : ndarray of int64, shape [B, C]
        The beam ``k`` each candidate extends.

    Raises
    ------
    ValueError
        Shapes that do not match, a bad ``num_candidates``, NaN/``+inf`` beam scores, a
        logits row with a NaN or ``+inf``, or a bitmask row that allows no token (the
        message names the row ``(b, k)``).

    Notes
    -----
    Ties are broken toward the lower beam, then the lower token, so results are exactly
    reproducible (and identical for any thread count). ``-inf`` logits (banned tokens) and dead
    beams are never selected while finite candidates remain; when fewer than ``C`` finite
    candidates exist, the rest are ``-inf`` candidates in (beam, token) order.

    One read of the logits: each row's normalizer and its best ``C`` logits are found in the
    same pass, and log-probs are computed for the selected entries only.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> logits = np.log(np.array([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]]))
    >>> scores, tokens, beams = fastlsm.beam_step(logits, np.log([[0.5, 0.5]]))
    >>> np.exp(scores).round(3), tokens, beams
    (array([[0.3 , 0.3 , 0.15, 0.1 ]]), array([[0, 2, 1, 0]]), array([[0, 1, 0, 1]]))
    """
    x = logits_array(logits, "logits")
    if x.ndim != 3:
        raise ValueError(f"logits must have shape [B, K, V], got {x.ndim} dimensions {x.shape}")
    nb, nk, nv = x.shape
    bs = np.asarray(beam_scores)
    if bs.dtype.kind not in "fiu" or bs.dtype.kind == "b":
        raise TypeError(f"beam_scores must be a float array, got {bs.dtype}")
    if bs.shape != (nb, nk):
        raise ValueError(
            f"beam_scores has shape {bs.shape}, but logits of shape {x.shape} need "
            f"beam_scores of shape {(nb, nk)}"
        )
    bs = np.array(bs, dtype=np.float64, order="C").reshape(-1)  # private: one signature
    if not (bs < np.inf).all():  # NaN or +inf (one comparison pass)
        raise ValueError("beam_scores contain NaN or +inf; use -inf for a dead beam")
    if nk == 0 or nv == 0:
        raise ValueError(f"logits of shape {x.shape} have no candidates (K and V must be >= 1)")
    if num_candidates is None:
        cap = min(2 * nk, nk * nv)
    else:
        cap = _count(num_candidates, "num_candidates", 1)
        if cap > nk * nv:
            raise ValueError(
                f"num_candidates={cap} exceeds the K * V = {nk * nv} candidates available"
            )
    scores = np.empty((nb, cap), np.float64)
    tokens = np.empty((nb, cap), np.int64)
    beams = np.empty((nb, cap), np.int64)
    if nb == 0:
        return scores.astype(result_dtype(x.dtype)), tokens, beams
    logp = np.empty((nb, cap), np.float64)
    row_val = np.empty((nb * nk, cap), np.float64)
    row_tok = np.empty((nb * nk, cap), np.int64)
    row_n = np.empty(nb * nk, np.int64)
    rows = kernel_view(np.ascontiguousarray(x).reshape(nb * nk, nv))  # 16-bit: read as is
    mask = None
    if token_bitmask is not None:
        mask = _bitmask(token_bitmask, (nb, nk), nv)
        empty = _bitmask_kernels.first_empty_row(mask, nv)
        if empty >= 0:
            b, k = divmod(int(empty), nk)
            raise ValueError(f"token_bitmask[{b}, {k}] allows no token of the {nv}")
    run = _jit.launch(_k.beam_step_rows, x.size, nb * nk)  # one thread: the serial copy
    bad = run(rows, bs, nk, row_val, row_tok, row_n, scores, tokens, beams, logp, mask)
    if bad >= 0:
        b, k = divmod(int(bad), nk)
        raise ValueError(
            f"logits[{b}, {k}] contains NaN or +inf; mask tokens with -inf instead"
        )
    return scores.astype(result_dtype(x.dtype), copy=False), tokens, beams



def _bitmask(value, rows: tuple, vocab: int, prefix: str = "") -> np.ndarray:
    """A token bitmask as C-contiguous int32 ``[prod(rows), ceil(vocab / 32)]``.

    Accepted shapes: ``rows + (W,)``, ``(prod(rows), W)``, or ``(W,)`` (the same mask for
    every row); int32 or uint32 (the same bits).
    """
    m = np.asarray(value)
    if m.dtype not in (np.int32, np.uint32):
        raise TypeError(f"{prefix}token_bitmask must be int32 (xgrammar's layout), got {m.dtype}")
    words = (vocab + 31) // 32
    n = math.prod(rows)
    if m.shape == (words,):
        m = np.broadcast_to(m, (n, words))
    elif m.shape in (tuple(rows) + (words,), (n, words)):
        m = m.reshape(n, words)
    else:
        raise ValueError(
            f"{prefix}token_bitmask has shape {m.shape}; for {n} rows and V = {vocab} it must "
            f"be {tuple(rows) + (words,)}, {(n, words)} or {(words,)} (ceil(V / 32) words)"
        )
    m = np.ascontiguousarray(m.astype(m.dtype.newbyteorder("="), copy=False)).view(np.int32)
    return readable(m)  # a read-only mask (or a broadcast view): a writeable alias


@dataclasses.dataclass(frozen=True)
class BeamSearchOutput:
    """Result of :func:`beam_search` (rows ``b * num_return_sequences + r``, best first).

    Attributes
    ----------
    sequences : ndarray of int64, shape [B * R, L + G]
        Prompt followed by the generated tokens (EOS included), padded with ``pad_token_id``;
        ``G`` is the longest generated length among the returned rows.
    sequences_scores : ndarray of float64, shape [B * R]
        transformers' ``sequences_scores``: sum of the token log-probs divided by
        ``generated_length ** length_penalty``.
    token_logprobs : ndarray of float64, shape [B * R, G]
        Log-prob of each generated token as used in the score (after the repetition penalty
        and bans), 0 after the end of the sequence.
    lengths : ndarray of int64, shape [B * R]
        Number of generated tokens of each row (EOS included).
    steps : int
        Number of decoding steps (calls of ``step_fn``).
    """

    sequences: np.ndarray
    sequences_scores: np.ndarray
    token_logprobs: np.ndarray
    lengths: np.ndarray
    steps: int


_EARLY = {False: _cfg.EARLY_FALSE, True: _cfg.EARLY_TRUE}


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _check_config(status: int, config: dict, prefix: str = "") -> None:
    """Raise the ValueError of a :func:`~fastlsm._kernels.decoder.config.check_config` code."""
    if status != _cfg.CONFIG_OK:
        values = dict(config, num_eos=config["eos_ids"].size)
        raise ValueError(prefix + _cfg.config_message(int(status), **values))


def _token_ids(value, name: str) -> list:
    if value is None:
        return []
    items = [value] if isinstance(value, numbers.Integral) or np.ndim(value) == 0 else list(
        np.asarray(value).reshape(-1))
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer or a list of integers, got {value!r}")
        out.append(int(v))
    return out


@_jit.public
def beam_search(step_fn, input_ids, *, num_beams, max_new_tokens, eos_token_id,
                pad_token_id=None, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, min_new_tokens=0, no_repeat_ngram_size=0,
                repetition_penalty=1.0, patience=1.0, renormalize=False,
                token_bitmask=None) -> BeamSearchOutput:
    """Beam-search decoding with the semantics of transformers' ``generate(num_beams=...)``.

    Parameters
    ----------
    step_fn : callable ``(input_ids, parent_beams) -> logits``
        Called once per step with the running sequences, int64 ``[B * num_beams, cur_len]``
        (prompt included; row ``b * num_beams + k``), and ``parent_beams``: None on the
        first step, then int64 ``[B * num_beams]``, the row of the previous step's sequences
        that each row continues (``logits`` cache rows should be gathered with it). Returns
        next-token logits, float32, float64, bfloat16 or float16 ``[B * num_beams, V]``
        (16-bit: read as they are, searched as their exact float32 values; NumPy array, or
        anything ``np.asarray`` accepts such as a CPU torch tensor).
    input_ids : array_like of int, shape [B, L]
        The prompts (same length; left-pad them yourself if needed).
    num_beams : int
        Beams per prompt (K >= 1).
    max_new_tokens : int
        Maximum number of generated tokens (>= 1); the search stops at ``L + max_new_tokens``.
    eos_token_id : int, list of int, or None
        End-of-sequence id(s). None: hypotheses end at the maximum length only.
    pad_token_id : int, optional
        Fills sequences shorter than the longest returned one. Default: the first EOS id.
    length_penalty : float
        Finished hypotheses are ranked by ``sum_logprob / generated_len ** length_penalty``
        (> 0 favors longer sequences, < 0 shorter ones).
    early_stopping : bool or "never"
        transformers' stopping rule per prompt. True: stop once ``num_beams`` hypotheses are
        finished. False: also stop when the best running beam, scored at the current length,
        cannot beat the worst finished hypothesis (a heuristic). "never": the same test at
        the maximum length when ``length_penalty > 0`` (the exact criterion).
    num_return_sequences : int
        Hypotheses returned per prompt, ``1 <= R <= num_beams`` (and ``<= round(num_beams *
        patience)``).
    min_new_tokens : int
        EOS is banned until this many tokens are generated.
    no_repeat_ngram_size : int
        If > 0, an n-gram of this size (prompt included) never occurs twice.
    repetition_penalty : float
        > 0; tokens already in the sequence (prompt included) get ``logp * p`` (``logp / p``
        when ``logp >= 0``), transformers' ``RepetitionPenaltyLogitsProcessor``.
    patience : float
        CTranslate2's patience: keep ``round(num_beams * patience)`` finished hypotheses per
        prompt (and with ``early_stopping=True`` wait for that many). 1.0 is transformers.
    renormalize : bool
        False (transformers' order): the penalty and bans apply to the log-probs after
        ``log_softmax``. True (CTranslate2's order): they apply to the logits, which are then
        normalized, so the log-probs of allowed tokens sum to 1.
    token_bitmask : array_like of int32, or callable ``(input_ids, parent_beams) -> mask``
        Constrained decoding: a bitmask ``[B * num_beams, ceil(V / 32)]`` (or
        ``[ceil(V / 32)]`` for every row) in the layout of xgrammar and llguidance (bit
        ``j % 32`` of word ``j // 32`` set = token ``j`` allowed), or a callable given the
        same arguments as ``step_fn`` that returns the mask of this step (a grammar
        matcher per beam). Disallowed tokens are banned like ``no_repeat_ngram_size`` bans:
        ``-inf`` after ``log_softmax`` (transformers' order: a
        ``PrefixConstrainedLogitsProcessor``), or before it with ``renormalize=True``. A
        row that allows no token is an error naming the step and the row.

    Returns
    -------
    BeamSearchOutput
        ``sequences``, ``sequences_scores``, ``token_logprobs``, ``lengths``, ``steps``.

    Raises
    ------
    ValueError, TypeError
        Bad options or shapes; a ``step_fn`` result of the wrong shape, dtype, or with a NaN
        or ``+inf`` in a row, or a bitmask row allowing no token (the message names the
        step and the row).

    Notes
    -----
    Each step runs transformers' ``_beam_search`` loop body: ``log_softmax``, the logits
    processors, the top ``max(2, 1 + n_eos) * num_beams`` candidates (ties: lower beam,
    then lower token), finished candidates among the top ``num_beams`` stored with their
    length-normalized score, the best unfinished ones kept running. The bookkeeping is
    compiled code over preallocated state (:mod:`fastlsm._kernels.decoder`), shared with the C
    decoder. Scores are accumulated in float64 (transformers uses float32, so scores agree
    to about 1e-6). Differences: transformers runs greedy search when ``num_beams == 1``
    (this runs the beam algorithm with one beam), and pads with the EOS id when
    ``pad_token_id == 0``; this pads with ``pad_token_id``.

    Examples
    --------
    >>> import numpy as np, fastlsm
    >>> table = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]]))
    >>> step = lambda ids, parents: table[ids[:, -1]]  # a bigram model
    >>> out = fastlsm.beam_search(step, [[2]], num_beams=2, max_new_tokens=4, eos_token_id=0,
    ...                           pad_token_id=9, num_return_sequences=2, length_penalty=0.0)
    >>> out.sequences.tolist(), out.sequences_scores.round(4).tolist()
    ([[2, 0, 9], [2, 1, 0]], [-1.204, -1.8971])
    >>> out.lengths.tolist(), np.exp(out.token_logprobs).round(2).tolist()
    ([1, 2], [[0.3, 1.0], [0.3, 0.5]])
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
    ids = np.asarray(input_ids)
    if ids.dtype.kind not in "iu" or ids.dtype.kind == "b":
        raise TypeError(f"input_ids must hold integer token ids, got {ids.dtype}")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape [B, L], got shape {ids.shape}")
    nb, lp = ids.shape
    if lp and ids.min() < 0:
        raise ValueError("input_ids must be non-negative token ids")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if isinstance(early_stopping, str):
        if early_stopping != "never":
            raise ValueError(
                f'early_stopping must be True, False or "never", got {early_stopping!r}')
        early = _cfg.EARLY_NEVER
    elif isinstance(early_stopping, (bool, np.bool_)):
        early = _EARLY[bool(early_stopping)]
    else:
        raise TypeError(f'early_stopping must be True, False or "never", got {early_stopping!r}')
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize must be True or False, got {renormalize!r}")
    eos = np.array(_token_ids(eos_token_id, "eos_token_id"), np.int64)
    config = dict(
        batch=nb, prompt_len=lp, vocab=-1, num_beams=_integer(num_beams, "num_beams"),
        max_new_tokens=_integer(max_new_tokens, "max_new_tokens"), eos_ids=eos,
        pad_token_id=-1 if pad_token_id is None else _integer(pad_token_id, "pad_token_id"),
        length_penalty=_real(length_penalty, "length_penalty"), early_stopping=early,
        num_return_sequences=_integer(num_return_sequences, "num_return_sequences"),
        min_new_tokens=_integer(min_new_tokens, "min_new_tokens"),
        no_repeat_ngram_size=_integer(no_repeat_ngram_size, "no_repeat_ngram_size"),
        repetition_penalty=_real(repetition_penalty, "repetition_penalty"),
        patience=_real(patience, "patience"),
    )
    cfg = np.zeros(_cfg.CFG_SIZE + eos.size, np.int64)
    fcfg = np.zeros(_cfg.FCFG_SIZE, np.float64)
    _check_config(_cfg.pack_config(cfg, fcfg, **config, renormalize=int(renormalize)), config)
    nk = int(cfg[_cfg.CFG_BEAMS])
    gmax = int(cfg[_cfg.CFG_MAX_LEN]) - lp
    nret = config["num_return_sequences"]
    layout = np.empty(_state.LAYOUT_SIZE, np.int64)
    if _k.beam_search_layout(cfg, layout) != 0:  # pragma: no cover - validated above
        raise ValueError("invalid beam search configuration")
    istate = np.empty(layout[_state.L_INT_SIZE], np.int64)
    fstate = np.empty(layout[_state.L_FLOAT_SIZE], np.float64)
    status = _k.beam_search_init(cfg, fcfg, ids, fstate, istate)
    if status != _state.BEAM_RUNNING:  # pragma: no cover - validated above
        raise ValueError(f"beam search initialization failed (status {status})")
    nrows = nb * nk
    seqs = _field(istate, layout, _state.F.seqs)
    parents_view = _field(istate, layout, _state.F.parents)

    parents = None
    vocab = None
    step = 0
    while True:
        cur = int(istate[_state.ST_CUR_LEN])
        ids_now = np.array(seqs[:, :cur])
        _jit.caller_threads()  # the user's code runs with the user's Numba thread count
        out = step_fn(ids_now, parents)
        logits = _step_logits(out, step, nrows, vocab)
        if vocab is None:
            vocab = logits.shape[1]
            config["vocab"] = vocab
            _check_config(_cfg.check_config(**config), config, f"step {step}: ")
        mask = None
        if token_bitmask is not None:
            m = token_bitmask(ids_now, parents) if callable(token_bitmask) else token_bitmask
            mask = _bitmask(m, (nrows,), vocab, f"step {step}: ")
        advance = _jit.launch(_k.beam_search_advance, logits.size, nrows)
        status = advance(cfg, fcfg, fstate, istate, logits, mask)
        if status == _state.BEAM_BAD_MASK:
            r = int(istate[_state.ST_BAD_ROW])
            raise ValueError(
                f"step {step}: token_bitmask row {r} (batch {r // nk}, beam {r % nk}) allows "
                f"no token of the {vocab}"
            )
        if status == _state.BEAM_BAD_LOGITS:
            r = int(istate[_state.ST_BAD_ROW])
            raise ValueError(
                f"step {step}: step_fn returned logits with NaN or +inf in row {r} (batch "
                f"{r // nk}, beam {r % nk}); mask tokens with -inf instead"
            )
        if status not in (_state.BEAM_RUNNING, _state.BEAM_DONE):  # pragma: no cover
            raise ValueError(f"step {step}: beam search failed (status {status})")
        step += 1
        if status == _state.BEAM_DONE:
            break
        parents = parents_view.copy()

    out_seqs = np.empty((nb * nret, lp + gmax), np.int64)
    out_scores = np.empty(nb * nret, np.float64)
    out_logp = np.empty((nb * nret, gmax), np.float64)
    out_len = np.empty(nb * nret, np.int64)
    total = _k.beam_search_finalize(cfg, fcfg, fstate, istate, out_seqs, out_scores, out_logp,
                                    out_len)
    if total < 0:  # pragma: no cover - sizes are ours
        raise ValueError(f"beam search finalize failed (status {-total})")
    return BeamSearchOutput(
        sequences=out_seqs[:, :total].copy(),
        sequences_scores=out_scores,
        token_logprobs=out_logp[:, : total - lp].copy(),
        lengths=out_len,
        steps=step,
    )


def _field(buf: np.ndarray, layout: np.ndarray, f: int) -> np.ndarray:
    """The view of state field ``f`` (a row of the decoder's FIELDS table) in ``buf``."""
    ndim = len(_state.FIELDS[f][2].split(","))
    shape = tuple(int(e) for e in layout[_state.L_SHAPES + 3 * f:][:ndim])
    return buf[layout[f]:layout[f] + math.prod(shape)].reshape(shape)


def _step_logits(out, step: int, nrows: int, vocab) -> np.ndarray:
    """Validate what step_fn returned; a C-contiguous, writable float32/float64 array, or
    the kernel view of a bfloat16/float16 one (searched as its exact float32 values)."""
    try:
        x = np.asarray(out)
    except Exception as exc:  # e.g. a tensor that needs .detach()
        raise TypeError(
            f"step {step}: step_fn must return a NumPy array of logits, got "
            f"{type(out).__name__} ({exc})"
        ) from None
    if x.dtype.kind == "f" and x.dtype.itemsize == 2 and not x.dtype.isnative:
        x = x.astype(np.float16)
    if x.dtype not in (np.float32, np.float64) and not is_half(x.dtype):
        raise TypeError(
            f"step {step}: step_fn returned logits of dtype {x.dtype}; return float32, "
            f"float64, bfloat16 or float16 logits of shape [B * num_beams, V]"
        )
    expected = f"[{nrows}, V]" if vocab is None else f"[{nrows}, {vocab}]"
    if x.ndim != 2 or x.shape[0] != nrows or x.shape[1] == 0 or (
            vocab is not None and x.shape[1] != vocab):
        raise ValueError(
            f"step {step}: step_fn returned logits of shape {x.shape}, expected {expected} "
            f"(one row per running beam, b * num_beams + k)"
        )
    if not (x.flags.c_contiguous and x.flags.writeable and x.dtype.isnative
            and x.flags.aligned):
        x = np.array(x, dtype=x.dtype.newbyteorder("="), order="C")
    return kernel_view(x)
