"""Beam search: the fused beam step and a complete decoder with transformers' semantics."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator

import numpy as np

from . import _jit
from ._dtypes import is_half, logits_array, result_dtype, widened
from ._kernels import beam as _k


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def beam_step(logits, beam_scores, *, num_candidates=None):
    """One beam-search step: ``beam_scores + log_softmax(logits)``, top candidates per batch.

    Parameters
    ----------
    logits : array_like, float32 or float64, shape [B, K, V]
        Next-token logits of the ``K`` beams of each of ``B`` batch items.
    beam_scores : array_like, float, shape [B, K]
        Running (summed log-prob) scores of the beams. ``-inf`` marks a dead beam; NaN and
        ``+inf`` are rejected.
    num_candidates : int, optional
        How many candidates to return per batch item, ``1 <= C <= K * V``. Default ``2 * K``
        (capped at ``K * V``), what a decoder needs to keep ``K`` beams alive when up to ``K``
        candidates end with EOS.

    Returns
    -------
    scores : ndarray, shape [B, C], the logits' dtype
        ``beam_scores[b, k] + log_softmax(logits[b, k])[v]``, computed in float64 as
        ``beam + ((x - max) - log(sum))`` and rounded once; descending per row.
    tokens : ndarray of int64, shape [B, C]
    beams : ndarray of int64, shape [B, C]
        The beam ``k`` each candidate extends.

    Raises
    ------
    ValueError
        Shapes that do not match, a bad ``num_candidates``, NaN/``+inf`` beam scores, or a
        logits row with a NaN or ``+inf`` (the message names the row ``(b, k)``).

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
    bs = np.ascontiguousarray(bs, dtype=np.float64).reshape(-1)
    if np.isnan(bs).any() or (bs == np.inf).any():
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
    rows = np.ascontiguousarray(x).reshape(nb * nk, nv)
    if is_half(x.dtype):  # the float32 kernel on a widened copy
        rows = widened(rows)
    _jit.use_threads(x.size)
    bad = _k.beam_step_rows(rows, bs, nk, row_val, row_tok, row_n, scores, tokens, beams, logp)
    if bad >= 0:
        b, k = divmod(int(bad), nk)
        raise ValueError(
            f"logits[{b}, {k}] contains NaN or +inf; mask tokens with -inf instead"
        )
    return scores.astype(result_dtype(x.dtype), copy=False), tokens, beams



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


_EARLY = {False: _k.EARLY_FALSE, True: _k.EARLY_TRUE, "never": _k.EARLY_NEVER}


def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _token_ids(value, name: str) -> list:
    if value is None:
        return []
    items = [value] if isinstance(value, numbers.Integral) or np.ndim(value) == 0 else list(
        np.asarray(value).reshape(-1))
    out = []
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer or a list of integers, got {value!r}")
        if v < 0:
            raise ValueError(f"{name} must be non-negative token ids, got {value!r}")
        out.append(int(v))
    return out


def beam_search(step_fn, input_ids, *, num_beams, max_new_tokens, eos_token_id,
                pad_token_id=None, length_penalty=1.0, early_stopping=False,
                num_return_sequences=1, min_new_tokens=0, no_repeat_ngram_size=0,
                repetition_penalty=1.0, patience=1.0, renormalize=False):
    """Beam-search decoding with the semantics of transformers' ``generate(num_beams=...)``.

    Parameters
    ----------
    step_fn : callable ``(input_ids, parent_beams) -> logits``
        Called once per step with the running sequences, int64 ``[B * num_beams, cur_len]``
        (prompt included; row ``b * num_beams + k``), and ``parent_beams``: None on the
        first step, then int64 ``[B * num_beams]``, the row of the previous step's sequences
        that each row continues (``logits`` cache rows should be gathered with it). Returns
        next-token logits, float32 or float64 ``[B * num_beams, V]`` (NumPy array, or
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

    Returns
    -------
    BeamSearchOutput
        ``sequences``, ``sequences_scores``, ``token_logprobs``, ``lengths``, ``steps``.

    Raises
    ------
    ValueError, TypeError
        Bad options or shapes; a ``step_fn`` result of the wrong shape, dtype, or with a NaN
        or ``+inf`` in a row (the message names the step and the row).

    Notes
    -----
    Each step runs transformers' ``_beam_search`` loop body: ``log_softmax``, the logits
    processors, the top ``max(2, 1 + n_eos) * num_beams`` candidates (ties: lower beam,
    then lower token), finished candidates among the top ``num_beams`` stored with their
    length-normalized score, the best unfinished ones kept running. The bookkeeping is
    compiled code over preallocated state (:mod:`fastlsm._kernels.beam`), shared with the C
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
    if nb < 1:
        raise ValueError("input_ids must hold at least one prompt (B >= 1)")
    if lp and ids.min() < 0:
        raise ValueError("input_ids must be non-negative token ids")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    nk = _count(num_beams, "num_beams", 1)
    gmax = _count(max_new_tokens, "max_new_tokens", 1)
    nret = _count(num_return_sequences, "num_return_sequences", 1)
    eos = _token_ids(eos_token_id, "eos_token_id")
    if pad_token_id is None:
        pad = eos[0] if eos else -1
    else:
        pad = _count(pad_token_id, "pad_token_id", 0)
    lpen = _real(length_penalty, "length_penalty")
    if isinstance(early_stopping, str):
        if early_stopping != "never":
            raise ValueError(f'early_stopping must be True, False or "never", got {early_stopping!r}')
        early = _k.EARLY_NEVER
    elif isinstance(early_stopping, (bool, np.bool_)):
        early = _EARLY[bool(early_stopping)]
    else:
        raise TypeError(f'early_stopping must be True, False or "never", got {early_stopping!r}')
    min_new = _count(min_new_tokens, "min_new_tokens", 0)
    ngram = _count(no_repeat_ngram_size, "no_repeat_ngram_size", 0)
    rep = _real(repetition_penalty, "repetition_penalty")
    if rep <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {rep}")
    pat = _real(patience, "patience")
    nh = int(round(nk * pat))
    if pat <= 0 or nh < 1:
        raise ValueError(f"patience must be > 0 with round(num_beams * patience) >= 1, got {pat}")
    if nret > nk:
        raise ValueError(
            f"num_return_sequences={nret} is larger than num_beams={nk}; ask for at most "
            f"num_beams sequences or raise num_beams"
        )
    if nret > nh:
        raise ValueError(
            f"num_return_sequences={nret} is larger than round(num_beams * patience) = {nh} "
            f"kept hypotheses; raise patience or lower num_return_sequences"
        )
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize must be True or False, got {renormalize!r}")

    nc = max(2, 1 + len(eos)) * nk
    cfg = np.zeros(_k.CFG_SIZE + len(eos), np.int64)
    cfg[_k.CFG_BATCH] = nb
    cfg[_k.CFG_BEAMS] = nk
    cfg[_k.CFG_PROMPT_LEN] = lp
    cfg[_k.CFG_MAX_LEN] = lp + gmax
    cfg[_k.CFG_CANDIDATES] = nc
    cfg[_k.CFG_MAX_HYPS] = nh
    cfg[_k.CFG_EARLY_STOPPING] = early
    cfg[_k.CFG_MIN_NEW_TOKENS] = min_new
    cfg[_k.CFG_NO_REPEAT_NGRAM] = ngram
    cfg[_k.CFG_RENORMALIZE] = int(bool(renormalize))
    cfg[_k.CFG_PAD] = pad
    cfg[_k.CFG_NUM_EOS] = len(eos)
    cfg[_k.CFG_EOS:] = eos
    fcfg = np.array([lpen, rep], np.float64)
    layout = np.empty(_k.LAYOUT_SIZE, np.int64)
    if _k.beam_search_layout(cfg, layout) != 0:  # pragma: no cover - validated above
        raise ValueError("invalid beam search configuration")
    istate = np.empty(layout[_k.L_INT_SIZE], np.int64)
    fstate = np.empty(layout[_k.L_FLOAT_SIZE], np.float64)
    status = _k.beam_search_init(cfg, fcfg, ids, fstate, istate)
    if status != _k.BEAM_RUNNING:  # pragma: no cover - validated above
        raise ValueError(f"beam search initialization failed (status {status})")
    nrows = nb * nk
    o = layout[_k.L_SEQS]
    seqs = istate[o:o + nrows * (lp + gmax)].reshape(nrows, lp + gmax)
    o = layout[_k.L_PARENTS]
    parents_view = istate[o:o + nrows]

    parents = None
    vocab = None
    step = 0
    while True:
        cur = int(istate[_k.ST_CUR_LEN])
        out = step_fn(np.array(seqs[:, :cur]), parents)
        logits = _step_logits(out, step, nrows, vocab)
        if vocab is None:
            vocab = logits.shape[1]
            if nc > nk * vocab:
                raise ValueError(
                    f"step {step}: vocabulary size {vocab} is too small for num_beams={nk} with "
                    f"{len(eos)} EOS id(s): beam search needs {nc} candidates out of K * V"
                )
        _jit.use_threads(logits.size)
        status = _k.beam_search_advance(cfg, fcfg, fstate, istate, logits)
        if status == _k.BEAM_BAD_LOGITS:
            r = int(istate[_k.ST_BAD_ROW])
            raise ValueError(
                f"step {step}: step_fn returned logits with NaN or +inf in row {r} (batch "
                f"{r // nk}, beam {r % nk}); mask tokens with -inf instead"
            )
        if status not in (_k.BEAM_RUNNING, _k.BEAM_DONE):  # pragma: no cover - checked above
            raise ValueError(f"step {step}: beam search failed (status {status})")
        step += 1
        if status == _k.BEAM_DONE:
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


def _step_logits(out, step: int, nrows: int, vocab) -> np.ndarray:
    """Validate what step_fn returned; a C-contiguous, writable float32/float64 array."""
    try:
        x = np.asarray(out)
    except Exception as exc:  # e.g. a tensor that needs .detach()
        raise TypeError(
            f"step {step}: step_fn must return a NumPy array of logits, got "
            f"{type(out).__name__} ({exc})"
        ) from None
    if is_half(x.dtype):  # 16-bit logits: searched as their exact float32 values
        x = x.astype(np.float32)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"step {step}: step_fn returned logits of dtype {x.dtype}; return float32 or "
            f"float64 logits of shape [B * num_beams, V]"
        )
    expected = f"[{nrows}, V]" if vocab is None else f"[{nrows}, {vocab}]"
    if x.ndim != 2 or x.shape[0] != nrows or x.shape[1] == 0 or (
            vocab is not None and x.shape[1] != vocab):
        raise ValueError(
            f"step {step}: step_fn returned logits of shape {x.shape}, expected {expected} "
            f"(one row per running beam, b * num_beams + k)"
        )
    if not (x.flags.c_contiguous and x.flags.writeable and x.dtype.isnative):
        x = np.array(x, dtype=x.dtype.newbyteorder("="), order="C")
    return x
