"""Checkpoints: one directory per checkpoint, portable between machines, written atomically and
read without executing anything from the files.

    <checkpoint>/config.json        format, model type and constructor arguments (enough to rebuild
                                    the model), step, epoch, history, training configuration
    <checkpoint>/model.safetensors  the weights
    <checkpoint>/ema.safetensors    the exponential moving average of the weights (when trained with EMA)
    <checkpoint>/training.pt        optimiser, scheduler and RNG state (read with weights_only=True)

A checkpoint is written into a temporary directory next to its place, every file synced, then
renamed into place; the one it replaces is first renamed to ``<checkpoint>.old`` and removed only
after. A crash therefore leaves either the old or the new checkpoint complete, and
``resolve_checkpoint`` finds whichever it is.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastgen import models

FORMAT, VERSION = "fastgen-checkpoint", 1
CONFIG, WEIGHTS, EMA_WEIGHTS, TRAINING = "config.json", "model.safetensors", "ema.safetensors", "training.pt"
MODEL_TYPES = {cls.__name__: cls for cls in (models.PixelCNN, models.GatedPixelCNN, models.PixelCNNpp, models.VAE,
                                               models.Autoencoder, models.DCGAN, models.MLPGAN)}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
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


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (what safetensors stores), without DDP's ``module.`` prefix."""
    return {k.removeprefix("module."): v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}


def save_checkpoint(path: str, *, model_type: str, model_config: dict[str, Any], weights: dict[str, torch.Tensor],
                    ema_weights: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> None:
    """Write a checkpoint directory at ``path`` atomically (see the module docstring).

    ``meta`` (step, epoch, history, ...) must be JSON-serialisable; ``training`` holds tensors and
    plain containers only (optimiser and scheduler state dicts, RNG states)."""
    from safetensors.torch import save_file  # a dependency of training only: `import fastgen` needs torch and numpy

    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    config = {"format": FORMAT, "version": VERSION, "model_type": model_type, "model_config": model_config,
              **(meta or {})}
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the checkpoint from other users
    try:
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(config, f, indent=1)
        save_file(_plain_weights(weights), os.path.join(tmp, WEIGHTS))
        if ema_weights is not None:
            save_file(_plain_weights(ema_weights), os.path.join(tmp, EMA_WEIGHTS))
        if training is not None:
            torch.save(training, os.path.join(tmp, TRAINING))
        for entry in os.listdir(tmp):
            with open(os.path.join(tmp, entry), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = path + ".old"
        if os.path.isdir(path):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_exists(path: str) -> bool:
    """Whether a complete checkpoint directory is at ``path`` (or, after an interrupted
    replacement, at ``path.old``)."""
    return any(os.path.isfile(os.path.join(candidate, CONFIG)) for candidate in (path, path + ".old"))


def resolve_checkpoint(path: str) -> str:
    """The checkpoint directory meant by ``path``: a checkpoint itself, or a run directory (its
    ``best`` checkpoint, else its ``last``). A checkpoint whose replacement was interrupted is
    found as ``<path>.old``."""
    for candidate in (path, path + ".old", os.path.join(path, "best"), os.path.join(path, "best.old"),
                      os.path.join(path, "last"), os.path.join(path, "last.old")):
        if os.path.isfile(os.path.join(candidate, CONFIG)):
            return candidate
    raise ValueError(f"{path}: no fastgen checkpoint there (expected a directory with {CONFIG}, or a run "
                     "directory holding best/ or last/)")


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its config, weights, EMA weights (or None) and training state."""

    path: str
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None

    def training_state(self) -> dict[str, Any]:
        """Optimiser, scheduler and RNG state (``torch.load(weights_only=True)``: no code runs)."""
        file = os.path.join(self.path, TRAINING)
        if not os.path.isfile(file):
            raise ValueError(f"{self.path}: holds no training state ({TRAINING}); it cannot be resumed")
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged or foreign files
            raise ValueError(f"{file}: not a readable training state ({type(e).__name__}: {e})") from None


def _read_weights(file: str) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file, without DDP's ``module.`` prefixes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{file}: not readable safetensors weights ({e})") from None
    return {k.removeprefix("module."): v for k, v in weights.items()}


def load_checkpoint(path: str) -> Checkpoint:
    """Read the checkpoint at ``path`` (see ``resolve_checkpoint``). A missing, truncated or foreign
    file raises a ValueError naming it."""
    path = resolve_checkpoint(path)
    file = os.path.join(path, CONFIG)
    try:
        with open(file) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not a readable checkpoint config ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{file}: not a fastgen checkpoint (no \"format\": \"{FORMAT}\")")
    if config.get("version", 0) > VERSION:
        raise ValueError(f"{file}: written by a newer fastgen (format version {config['version']} > {VERSION})")
    if not os.path.isfile(os.path.join(path, WEIGHTS)):
        raise ValueError(f"{path}: the checkpoint has no {WEIGHTS}")
    weights = _read_weights(os.path.join(path, WEIGHTS))
    ema_file = os.path.join(path, EMA_WEIGHTS)
    ema = _read_weights(ema_file) if os.path.isfile(ema_file) else None
    return Checkpoint(path, config, weights, ema)


def resume_state(path: str, model: torch.nn.Module) -> tuple[Checkpoint, dict[str, Any]]:
    """Read a training checkpoint for ``model``: check that it holds that type of model, load its
    weights into it and restore the global RNG. Returns the checkpoint (its config holds the
    counters and history) and its training state, for the trainer to restore the rest from."""
    checkpoint = load_checkpoint(path)
    model_type = checkpoint.config["model_type"]
    if model_type != type(model).__name__:
        raise ValueError(f"{checkpoint.path}: holds a {model_type}, not a {type(model).__name__}")
    training = checkpoint.training_state()
    model.load_state_dict(checkpoint.weights)
    torch.set_rng_state(training["rng"])
    return checkpoint, training


def model_from_checkpoint(path: str, device: torch.device | str = "cpu", *, ema: bool = True) -> torch.nn.Module:
    """Rebuild the fastgen model saved at ``path`` (a checkpoint or a run directory): its class and
    constructor arguments from config.json, then its weights (the EMA weights when the checkpoint
    has them and ``ema`` is True). Nothing half-loaded is ever returned."""
    checkpoint = load_checkpoint(path)
    model_type = checkpoint.config.get("model_type")
    cls = MODEL_TYPES.get(model_type)
    if cls is None:
        raise ValueError(f"{checkpoint.path}: unknown model type {model_type!r}; known: {sorted(MODEL_TYPES)}")
    try:
        model = cls(**checkpoint.config["model_config"])
        weights = checkpoint.ema_weights if ema and checkpoint.ema_weights is not None else checkpoint.weights
        model.load_state_dict(weights)
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        raise ValueError(f"{checkpoint.path}: the weights do not fit a {model_type} of its config ({e})") from None
    return model.to(device)
