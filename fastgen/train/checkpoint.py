"""Checkpoints: written atomically (a temporary file in the same directory, then a rename, so a
crash leaves the previous checkpoint intact) and read without unpickling code
(``torch.load(weights_only=True)``)."""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from fastgen import models


def atomic_write(path: str, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a missing, truncated or foreign file raises
    a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise ValueError(f"{path}: not a readable fastgen checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "model_type" not in state:
        raise ValueError(f"{path}: not a fastgen checkpoint (no model weights and type)")
    return state


MODEL_TYPES = {cls.__name__: cls for cls in (models.PixelCNN, models.GatedPixelCNN)}


def model_from_checkpoint(path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the model saved in a checkpoint (its config and weights)."""
    state = load_checkpoint(path)
    cls = MODEL_TYPES.get(state["model_type"])
    if cls is None:
        raise ValueError(f"{path}: unknown model type {state['model_type']!r}; known: {sorted(MODEL_TYPES)}")
    model = cls(**state["model_config"])
    weights = {k.removeprefix("module."): v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    return model.to(device)
