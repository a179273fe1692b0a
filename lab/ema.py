"""A moving average of a network's weights: what a generator samples from.

A generator's weights keep moving while it trains (a GAN's oscillate around a moving
target, a diffusion model's follow the noise of its minibatches); the exponential moving
average of the last ~1/(1 - decay) steps samples better than the latest weights (Yazici et
al. 2019 for GANs; every diffusion model since DDPM samples from one). `diffusion` and `gan`
share this one.

BatchNorm's running statistics belong to the weights that computed them, not to an average
of weights, so a network with BatchNorm re-estimates them for the averaged weights
(`recompute_batchnorm`, "precise BN") before it samples.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn


class WeightAverage:
    """`model`: a frozen copy of `net` whose parameters follow `net`'s by `update(step)`.

    The decay warms up as min(decay, (1 + step) / (10 + step)), so the average forgets the
    random initial weights within the first steps rather than over 1/(1 - decay) of them.
    Buffers (BatchNorm statistics) are the live network's until `recompute_batchnorm`.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.net, self.decay = net, decay
        self.model = copy.deepcopy(net).requires_grad_(False)
        self._live = list(net.parameters())
        self._average = list(self.model.parameters())

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards `net` after optimiser step number `step` (1, 2, ...)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._average, self._live, 1.0 - decay)
        for mine, live in zip(self.model.buffers(), self.net.buffers(), strict=True):
            mine.copy_(live)


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[tuple[torch.Tensor | None, ...]]) -> None:
    """Set every BatchNorm layer's running mean and variance to their average over the
    forward passes `model(*batch)` in training mode (a cumulative average, not momentum);
    the model's mode and the layers' momenta are left as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta, training = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for batch in batches:
        model(*batch)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(training)
