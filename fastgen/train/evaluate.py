"""Likelihood of a data set under a model, in bits per dimension."""
from __future__ import annotations

import math

import torch

from fastgen.data import ImageDataset


@torch.no_grad()
def bits_per_dim_on(model: torch.nn.Module, data: ImageDataset, *, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> float:
    """Mean bits/dim of ``data`` under ``model`` (which takes ``loss(x, cond)``, nats per
    sub-pixel); a class-conditional model gets the labels. The model is evaluated in eval mode."""
    conditional = getattr(model, "n_classes", None) is not None
    if conditional and data.labels is None:
        raise ValueError(f"the model is class-conditional but {data.name} has no labels")
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for index in torch.arange(len(data)).split(batch_size):
            x = data.images[index].to(device, torch.long)
            cond = data.labels[index].to(device) if conditional else None
            total += model.loss(x, cond).item() * len(index)
    finally:
        model.train(was_training)
    return total / len(data) / math.log(2.0)
