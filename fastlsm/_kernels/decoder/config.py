"""The beam-search configuration: its packed form, and its validation written once.

Python (:func:`fastlsm.beam_search`) and C (``fastlsm_beam_search_*``) both describe a
search with the same scalars; both validate them with :func:`check_config` (a compiled pure
function: no exception, a status code) and pack them with :func:`pack_config` into the two
small arrays the decoder kernels read:

    cfg   int64   [CFG_SIZE + num_eos]  indices CFG_* (the EOS ids at the end)
    fcfg  float64 [FCFG_SIZE]           indices FCFG_*

Status codes of :func:`check_config` / :func:`pack_config` (``CONFIG_*``; 0 is success,
never renumbered, new codes may be added). :data:`CONFIG_ERRORS` maps each code to the field
it blames and a message template (``str.format`` fields are the argument names of
:func:`check_config`, plus ``num_eos``); Python raises ``ValueError(config_message(...))``,
C returns ``FASTLSM_ERR_INVALID_ARGUMENT`` with the same text (:func:`printf_message` gives
the template as a printf format and its argument names).
"""

from __future__ import annotations

import numpy as np

from ..._jit import kernel

CFG_BATCH = 0
CFG_BEAMS = 1
CFG_PROMPT_LEN = 2
CFG_MAX_LEN = 3
CFG_CANDIDATES = 4
CFG_MAX_HYPS = 5
CFG_EARLY_STOPPING = 6  # EARLY_FALSE (transformers' heuristic), EARLY_TRUE, EARLY_NEVER
CFG_MIN_NEW_TOKENS = 7
CFG_NO_REPEAT_NGRAM = 8
CFG_RENORMALIZE = 9  # 0: bans/penalty applied to log-probs (transformers), 1: to logits
CFG_PAD = 10
CFG_NUM_EOS = 11
CFG_EOS = 12  # cfg[CFG_EOS : CFG_EOS + num_eos] are the EOS ids
CFG_SIZE = 12  # + num_eos

FCFG_LENGTH_PENALTY = 0
FCFG_REPETITION_PENALTY = 1
FCFG_SIZE = 2

EARLY_FALSE = 0
EARLY_TRUE = 1
EARLY_NEVER = 2

CONFIG_OK = 0
CONFIG_BATCH = 1
CONFIG_NUM_BEAMS = 2
CONFIG_MAX_NEW_TOKENS = 3
CONFIG_NUM_RETURN_SEQUENCES = 4
CONFIG_RETURN_EXCEEDS_BEAMS = 5
CONFIG_MIN_NEW_TOKENS = 6
CONFIG_NO_REPEAT_NGRAM_SIZE = 7
CONFIG_LENGTH_PENALTY = 8
CONFIG_REPETITION_PENALTY = 9
CONFIG_EARLY_STOPPING = 10
CONFIG_PATIENCE = 11
CONFIG_MAX_HYPS = 12
CONFIG_EOS_TOKEN_ID = 13
CONFIG_PAD_TOKEN_ID = 14
CONFIG_VOCAB = 15
CONFIG_BUFFER = 16

CONFIG_ERRORS = {
    CONFIG_BATCH: ("batch", "batch={batch}: there must be at least one prompt (batch >= 1)"),
    CONFIG_NUM_BEAMS: ("num_beams", "num_beams must be at least 1, got {num_beams}"),
    CONFIG_MAX_NEW_TOKENS: (
        "max_new_tokens", "max_new_tokens must be at least 1, got {max_new_tokens}"),
    CONFIG_NUM_RETURN_SEQUENCES: (
        "num_return_sequences",
        "num_return_sequences must be at least 1, got {num_return_sequences}"),
    CONFIG_RETURN_EXCEEDS_BEAMS: (
        "num_return_sequences",
        "num_return_sequences={num_return_sequences} is larger than num_beams={num_beams}; "
        "ask for at most num_beams sequences or raise num_beams"),
    CONFIG_MIN_NEW_TOKENS: (
        "min_new_tokens", "min_new_tokens must be at least 0, got {min_new_tokens}"),
    CONFIG_NO_REPEAT_NGRAM_SIZE: (
        "no_repeat_ngram_size",
        "no_repeat_ngram_size must be at least 0 (0 = off), got {no_repeat_ngram_size}"),
    CONFIG_LENGTH_PENALTY: (
        "length_penalty", "length_penalty must be finite, got {length_penalty}"),
    CONFIG_REPETITION_PENALTY: (
        "repetition_penalty",
        "repetition_penalty must be > 0 and finite (1.0 = off), got {repetition_penalty}"),
    CONFIG_EARLY_STOPPING: (
        "early_stopping",
        "early_stopping={early_stopping} must be 0 (False, the heuristic), 1 (True) or "
        "2 (\"never\")"),
    CONFIG_PATIENCE: (
        "patience",
        "patience must be > 0 and finite (with num_beams * patience < 9e15), got {patience}"),
    CONFIG_MAX_HYPS: (
        "patience",
        "round(num_beams * patience) hypotheses are kept (num_beams={num_beams}, "
        "patience={patience}): that must be >= 1 and >= num_return_sequences="
        "{num_return_sequences}; raise patience or lower num_return_sequences"),
    CONFIG_EOS_TOKEN_ID: (
        "eos_token_id", "eos_token_id must hold non-negative token ids"),
    CONFIG_PAD_TOKEN_ID: (
        "pad_token_id",
        "pad_token_id must be >= 0, or -1 for the default (the first EOS id), got "
        "{pad_token_id}"),
    CONFIG_VOCAB: (
        "vocab",
        "vocabulary size {vocab} is too small for num_beams={num_beams} with {num_eos} EOS "
        "id(s): beam search needs max(2, 1 + num_eos) * num_beams candidates out of "
        "num_beams * vocab"),
    CONFIG_BUFFER: ("cfg", "the cfg/fcfg buffers are too short for this configuration"),
}
"""code -> (blamed field, message template)."""

CONFIG_ARGS = (
    ("batch", "int64"), ("prompt_len", "int64"), ("vocab", "int64"), ("num_beams", "int64"),
    ("max_new_tokens", "int64"), ("num_eos", "int64"), ("pad_token_id", "int64"),
    ("length_penalty", "float64"), ("early_stopping", "int64"),
    ("num_return_sequences", "int64"), ("min_new_tokens", "int64"),
    ("no_repeat_ngram_size", "int64"), ("repetition_penalty", "float64"),
    ("patience", "float64"),
)
"""Names and types of the values a message template may use (``num_eos`` = len(eos_ids))."""


def config_message(code: int, **values) -> str:
    """The message for status ``code``, its template filled from ``values``."""
    return CONFIG_ERRORS[code][1].format(**values)


def printf_message(code: int) -> tuple[str, tuple[str, ...]]:
    """The template of ``code`` as a printf format (``%lld``/``%g``) and its argument names."""
    types = dict(CONFIG_ARGS)
    text = CONFIG_ERRORS[code][1].replace("%", "%%")
    names = []
    while "{" in text:
        head, rest = text.split("{", 1)
        name, tail = rest.split("}", 1)
        names.append(name)
        text = head + ("%g" if types[name] == "float64" else "%lld") + tail
    return text, tuple(names)


@kernel
def num_candidates(num_beams, num_eos):
    """Candidates per batch item and step, transformers': ``max(2, 1 + num_eos) * K``."""
    return max(2, 1 + num_eos) * num_beams


@kernel
def max_hyps(num_beams, patience):
    """Finished hypotheses kept per batch item: ``round(K * patience)`` (half to even)."""
    return np.int64(np.rint(patience * np.float64(num_beams)))


@kernel
def _check(batch, prompt_len, vocab, num_beams, max_new_tokens, eos_ids, pad_token_id,
           length_penalty, early_stopping, num_return_sequences, min_new_tokens,
           no_repeat_ngram_size, repetition_penalty, patience):
    """:func:`check_config` (a helper: entry kernels never call entry kernels)."""
    num_eos = eos_ids.shape[0]
    if batch < 1:
        return np.int64(CONFIG_BATCH)
    if num_beams < 1:
        return np.int64(CONFIG_NUM_BEAMS)
    if max_new_tokens < 1:
        return np.int64(CONFIG_MAX_NEW_TOKENS)
    if num_return_sequences < 1:
        return np.int64(CONFIG_NUM_RETURN_SEQUENCES)
    if num_return_sequences > num_beams:
        return np.int64(CONFIG_RETURN_EXCEEDS_BEAMS)
    if min_new_tokens < 0:
        return np.int64(CONFIG_MIN_NEW_TOKENS)
    if no_repeat_ngram_size < 0:
        return np.int64(CONFIG_NO_REPEAT_NGRAM_SIZE)
    if not abs(length_penalty) < np.inf:
        return np.int64(CONFIG_LENGTH_PENALTY)
    if not (repetition_penalty > 0.0 and repetition_penalty < np.inf):
        return np.int64(CONFIG_REPETITION_PENALTY)
    if early_stopping < EARLY_FALSE or early_stopping > EARLY_NEVER:
        return np.int64(CONFIG_EARLY_STOPPING)
    if not (patience > 0.0 and patience * np.float64(num_beams) < 9e15):
        return np.int64(CONFIG_PATIENCE)
    nh = max_hyps(num_beams, patience)
    if nh < 1 or num_return_sequences > nh:
        return np.int64(CONFIG_MAX_HYPS)
    for i in range(num_eos):
        if eos_ids[i] < 0:
            return np.int64(CONFIG_EOS_TOKEN_ID)
    if pad_token_id < -1:
        return np.int64(CONFIG_PAD_TOKEN_ID)
    if vocab >= 0 and num_candidates(num_beams, num_eos) > num_beams * vocab:
        return np.int64(CONFIG_VOCAB)
    return np.int64(CONFIG_OK)


@kernel(entry=True)
def check_config(batch, prompt_len, vocab, num_beams, max_new_tokens, eos_ids, pad_token_id,
                 length_penalty, early_stopping, num_return_sequences, min_new_tokens,
                 no_repeat_ngram_size, repetition_penalty, patience):
    """Validate a beam-search configuration: CONFIG_OK (0) or the CONFIG_* code of the fault.

    Integers are int64, ``length_penalty``, ``repetition_penalty`` and ``patience`` float64,
    ``eos_ids`` int64 ``[num_eos]``. ``vocab < 0`` means not known yet (the vocabulary check
    is skipped; check again once it is). Sizes (negative counts, overflow) are the caller's;
    checks run in the order of the CONFIG_* codes and the first failing one is returned.
    """
    return _check(batch, prompt_len, vocab, num_beams, max_new_tokens, eos_ids, pad_token_id,
                  length_penalty, early_stopping, num_return_sequences, min_new_tokens,
                  no_repeat_ngram_size, repetition_penalty, patience)


@kernel(entry=True)
def pack_config(cfg, fcfg, batch, prompt_len, vocab, num_beams, max_new_tokens, eos_ids,
                pad_token_id, length_penalty, early_stopping, num_return_sequences,
                min_new_tokens, no_repeat_ngram_size, repetition_penalty, patience,
                renormalize):
    """:func:`check_config`, then on success fill ``cfg`` (int64 ``[>= CFG_SIZE + num_eos]``)
    and ``fcfg`` (float64 ``[>= FCFG_SIZE]``). Returns the status; buffers untouched on error.

    ``pad_token_id == -1`` becomes the first EOS id (-1 without EOS ids); ``renormalize`` is
    nonzero for CTranslate2's order (bans and penalty before normalizing).
    """
    status = _check(batch, prompt_len, vocab, num_beams, max_new_tokens, eos_ids, pad_token_id,
                    length_penalty, early_stopping, num_return_sequences, min_new_tokens,
                    no_repeat_ngram_size, repetition_penalty, patience)
    if status != CONFIG_OK:
        return status
    num_eos = eos_ids.shape[0]
    if cfg.shape[0] < CFG_SIZE + num_eos or fcfg.shape[0] < FCFG_SIZE:
        return np.int64(CONFIG_BUFFER)
    cfg[CFG_BATCH] = batch
    cfg[CFG_BEAMS] = num_beams
    cfg[CFG_PROMPT_LEN] = prompt_len
    cfg[CFG_MAX_LEN] = prompt_len + max_new_tokens
    cfg[CFG_CANDIDATES] = num_candidates(num_beams, num_eos)
    cfg[CFG_MAX_HYPS] = max_hyps(num_beams, patience)
    cfg[CFG_EARLY_STOPPING] = early_stopping
    cfg[CFG_MIN_NEW_TOKENS] = min_new_tokens
    cfg[CFG_NO_REPEAT_NGRAM] = no_repeat_ngram_size
    cfg[CFG_RENORMALIZE] = 1 if renormalize != 0 else 0
    if pad_token_id >= 0:
        cfg[CFG_PAD] = pad_token_id
    else:
        cfg[CFG_PAD] = eos_ids[0] if num_eos > 0 else -1
    cfg[CFG_NUM_EOS] = num_eos
    for i in range(num_eos):
        cfg[CFG_EOS + i] = eos_ids[i]
    fcfg[FCFG_LENGTH_PENALTY] = length_penalty
    fcfg[FCFG_REPETITION_PENALTY] = repetition_penalty
    return np.int64(CONFIG_OK)
