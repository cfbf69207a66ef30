"""fastlsm: fused, exact, parallel CPU kernels for the log-softmax family.

Public API (NumPy arrays in and out):

- :func:`log_softmax`, :func:`softmax`, :func:`logsumexp` (``fastlsm.normalize``)
- :func:`cross_entropy`, :func:`cross_entropy_with_grad`, :func:`nll_loss`
  (``fastlsm.losses``; PyTorch autograd drop-in: ``import fastlsm.torch``)
- :func:`sequence_logprobs` (``fastlsm.sequence``), :func:`beam_step`, :func:`beam_search`
  (``fastlsm.beam``)
- :func:`sample`, :func:`verify_draft` (``fastlsm.sampling``)
- :func:`set_num_threads`, :func:`get_num_threads`

C ABI: ``python -m fastlsm.capi build --out DIR`` (see ``capi/fastlsm.h``).

Environment: ``FASTLSM_NUM_THREADS`` (initial thread count), ``FASTLSM_THREADING_LAYER``
(``omp`` or ``tbb``), ``FASTLSM_CACHE_DIR`` (compiled-kernel cache).
"""

__version__ = "0.1.0"

from ._jit import get_num_threads, set_num_threads
from .beam import BeamSearchOutput, beam_search, beam_step
from .losses import (
    CrossEntropyResult,
    InvalidTargetError,
    cross_entropy,
    cross_entropy_with_grad,
    nll_loss,
)
from .normalize import log_softmax, logsumexp, softmax
from .sampling import SampleOutput, VerifyOutput, sample, verify_draft
from .sequence import sequence_logprobs
from .sequence_extras import SequenceLogprobs

__all__ = [
    "BeamSearchOutput",
    "CrossEntropyResult",
    "InvalidTargetError",
    "SampleOutput",
    "SequenceLogprobs",
    "VerifyOutput",
    "__version__",
    "beam_search",
    "beam_step",
    "cross_entropy",
    "cross_entropy_with_grad",
    "get_num_threads",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "sample",
    "sequence_logprobs",
    "set_num_threads",
    "softmax",
    "verify_draft",
]
