"""Exponential moving average of a model's weights (Polyak averaging), for sampling and evaluation."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class EMA:
    """After every optimiser step, ``average = decay * average + (1 - decay) * weight`` for each
    floating-point parameter and buffer; other buffers (counters) are copied. With ``warmup``, the
    decay of update t (from 0) is min(decay, (1 + t) / (10 + t)), as TensorFlow's moving average
    with ``num_updates``: early averages follow the weights instead of keeping the initialisation
    for ~1 / (1 - decay) updates (in a short GAN run, or a progressive GAN's newest block, that
    initialisation would otherwise be a large share of the average). ``updates`` counts the
    updates; a trainer saves it to resume exactly.

    >>> ema = EMA(model, decay=0.999)
    >>> ema.update(model)                 # after optimizer.step()
    >>> with ema.applied(model):          # the averaged weights, e.g. to sample or evaluate
    ...     images = model.sample(16)
    """

    def __init__(self, model: torch.nn.Module, decay: float, *, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update applies."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.average[k].lerp_(v.detach(), weight)
            else:
                self.average[k].copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.average) ^ set(state)
        if missing:
            raise ValueError(f"EMA weights do not match the model: {sorted(missing)[:5]}")
        for k, v in state.items():
            self.average[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Inside the block the model holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield model
        finally:
            model.load_state_dict(own)
