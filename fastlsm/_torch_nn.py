"""The ``torch.nn`` modules of :mod:`fastlsm.torch`: PyTorch's modules (same constructors,
buffers and state dicts) whose ``forward`` calls fastlsm's ops."""

from __future__ import annotations

import torch

from .torch import cross_entropy, log_softmax, nll_loss, softmax


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by fastlsm, plus ``z_loss`` and ``softcap``.

    Same constructor, buffers and state dict as PyTorch's module; ``forward`` also takes an
    optional ``token_weight``.
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
        *,
        z_loss=0.0,
        softcap=None,
    ):
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input, target, token_weight=None):
        return cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, label_smoothing=self.label_smoothing,
            z_loss=self.z_loss, softcap=self.softcap, token_weight=token_weight,
        )

    def extra_repr(self) -> str:
        return f"z_loss={self.z_loss}, softcap={self.softcap}"


class NLLLoss(torch.nn.NLLLoss):
    """``torch.nn.NLLLoss`` computed by fastlsm; ``forward`` also takes ``token_weight``."""

    def forward(self, input, target, token_weight=None):
        return nll_loss(
            input, target, weight=self.weight, ignore_index=self.ignore_index,
            reduction=self.reduction, token_weight=token_weight,
        )


class LogSoftmax(torch.nn.LogSoftmax):
    """``torch.nn.LogSoftmax`` computed by fastlsm."""

    def forward(self, input):
        return log_softmax(input, self.dim, _stacklevel=5)


class Softmax(torch.nn.Softmax):
    """``torch.nn.Softmax`` computed by fastlsm."""

    def forward(self, input):
        return softmax(input, self.dim, _stacklevel=5)
