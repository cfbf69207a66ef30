"""The beam family's entry points, as the Python API and the C ABI import them.

- :func:`beam_step_rows` (:mod:`.beam_rows`): one beam step, ``[B*K, V]`` logits -> top ``C``
  candidates per batch item;
- the decoder (:mod:`.decoder`): :func:`beam_search_layout`, :func:`beam_search_init`,
  :func:`beam_search_advance`, :func:`beam_search_finalize`, the state machine of Hugging
  Face transformers' ``generate(num_beams=K, do_sample=False)``.

The decoder's numbers (``CFG_*``, ``FCFG_*``, ``ST_*``, ``L_*``, ``BEAM_*``, ``HEADER``,
``LAYOUT_SIZE``, ``CONFIG_*``) are attributes of this module too, taken from
:func:`.decoder.c_constants` (``fastlsm/capi/_build.py`` writes them into the C build).
"""

from __future__ import annotations

from .beam_rows import beam_step_rows
from .decoder import (
    beam_search_advance,
    beam_search_finalize,
    beam_search_init,
    beam_search_layout,
    c_constants,
)

globals().update(c_constants())

__all__ = [
    "beam_search_advance",
    "beam_search_finalize",
    "beam_search_init",
    "beam_search_layout",
    "beam_step_rows",
    "c_constants",
]
