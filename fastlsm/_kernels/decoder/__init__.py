"""The beam-search decoder: transformers' ``generate(num_beams=K)`` over caller-owned state.

- :mod:`.config`: the packed configuration and its one validation (:func:`check_config`,
  :func:`pack_config`, :data:`CONFIG_ERRORS`);
- :mod:`.state`: the declarative table of state arrays (:data:`FIELDS`), the layout and the
  named views derived from it;
- :mod:`.steps`: the jobs of one step (row processing, merge, selection, hypotheses,
  stopping test);
- :mod:`.machine`: the entry kernels init / advance / finalize.
"""

from __future__ import annotations

from . import config, state
from .config import check_config, pack_config
from .machine import beam_search_advance, beam_search_finalize, beam_search_init
from .state import FIELDS, LAYOUT_SIZE, F, beam_search_layout


def c_constants() -> dict[str, int]:
    """Every number the C side needs, by name: the ``CFG_*``/``FCFG_*`` indices, the istate
    header (``ST_*``, ``HEADER``), the status codes (``BEAM_*``), the layout slots
    (``L_<FIELD>`` for each row of :data:`FIELDS`, ``L_INT_SIZE``, ``L_FLOAT_SIZE``,
    ``L_SHAPES``, ``LAYOUT_SIZE``) and the configuration codes (``CONFIG_*``)."""
    out = {}
    for module in (config, state):
        for name, value in vars(module).items():
            if (name.startswith(("CFG_", "FCFG_", "ST_", "BEAM_", "L_", "CONFIG_", "EARLY_"))
                    or name in ("HEADER", "LAYOUT_SIZE")) and isinstance(value, int):
                out[name] = value
    out.update({"L_" + name.upper(): i for i, name in enumerate(state.NAMES)})
    return out


__all__ = [
    "FIELDS",
    "LAYOUT_SIZE",
    "F",
    "beam_search_advance",
    "beam_search_finalize",
    "beam_search_init",
    "beam_search_layout",
    "c_constants",
    "check_config",
    "config",
    "pack_config",
    "state",
]
