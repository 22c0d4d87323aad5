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
``resolve_checkpoint`` finds whichever it is. Weights holding NaN or infinities are never written.

Reading checks before it trusts: config.json is strict JSON with typed fields, and the model it
describes is built on the meta device and compared with the safetensors header before any tensor
is allocated. Every problem is a ``CheckpointError`` (a ValueError) naming the file.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fastgen import models
from fastgen.train.distributed import resolve_device

FORMAT, VERSION = "fastgen-checkpoint", 1
# A run directory's config.json holds the options `fastgen train` ran with (fastgen/run_config.py):
# this format marks it, so that the run directory is not taken for a checkpoint.
RUN_CONFIG_FORMAT = "fastgen-run-config"
CONFIG, WEIGHTS, EMA_WEIGHTS, TRAINING = "config.json", "model.safetensors", "ema.safetensors", "training.pt"
MODEL_TYPES = {cls.__name__: cls for cls in (models.PixelCNN, models.GatedPixelCNN, models.PixelCNNpp, models.VAE,
                                               models.Autoencoder, models.PixelVAE, models.AdversarialAutoencoder,
                                               models.DCGAN, models.MLPGAN, models.ProgressiveGAN, models.Pix2Pix,
                                               models.CycleGAN)}
MAX_CONFIG_BYTES = 16 << 20  # a config.json is a few kB; a bigger one is not ours


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, foreign, or does not fit what it is loaded into. The message
    names the file and what was expected."""


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so that it serialises as strict JSON
    (``json.dumps`` would write the non-standard tokens NaN and Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps_strict(value: Any, **kw: Any) -> str:
    """JSON text of ``value`` (non-finite floats as null) that every JSON parser reads."""
    return json.dumps(json_safe(value), allow_nan=False, **kw)


def _refuse_constant(token: str) -> None:
    raise ValueError(f"{token} is not a JSON value")


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses the non-standard tokens NaN, Infinity and -Infinity (and, as a
    ValueError, nesting deeper than Python's recursion limit)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


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


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


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

    for kind, tensors in (("weights", weights), ("EMA weights", ema_weights or {})):
        bad = first_non_finite(tensors)
        if bad is not None:
            raise CheckpointError(f"{path}: refusing to write a checkpoint whose {kind} hold non-finite values "
                                  f"({bad}); the model has diverged")
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    # `<path>.old` is the copy an interrupted replacement leaves; anything else by that name is not ours.
    old = path + ".old"
    if os.path.lexists(old) and config_format(os.path.join(old, CONFIG)) != FORMAT:
        raise CheckpointError(f"{old}: in the way of replacing {path}, and not a fastgen checkpoint; move it")
    config = {"format": FORMAT, "version": VERSION, "model_type": model_type, "model_config": model_config,
              **(meta or {})}
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the checkpoint from other users
    try:
        with open(os.path.join(tmp, CONFIG), "w") as f:
            f.write(dumps_strict(config, indent=1))
        save_file(_plain_weights(weights), os.path.join(tmp, WEIGHTS))
        if ema_weights is not None:
            save_file(_plain_weights(ema_weights), os.path.join(tmp, EMA_WEIGHTS))
        if training is not None:
            torch.save(training, os.path.join(tmp, TRAINING))
        for entry in os.listdir(tmp):
            # safetensors creates its files 0600: give every file of a checkpoint the usual permissions
            os.chmod(os.path.join(tmp, entry), 0o666 & ~_umask())
            with open(os.path.join(tmp, entry), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if os.path.isdir(path):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def config_format(file: str) -> str | None:
    """The ``format`` of a fastgen config.json (FORMAT for a checkpoint's, RUN_CONFIG_FORMAT for a
    run directory's); None for a file that is missing, unreadable, not JSON or not ours."""
    try:
        config = read_json(file) if os.path.isfile(file) else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    found = config.get("format") if isinstance(config, dict) else None
    return found if found in (FORMAT, RUN_CONFIG_FORMAT) else None


def holds_checkpoint(path: str) -> bool:
    """Whether the directory ``path`` is a checkpoint to read: it has a config.json that is not a
    run directory's (a damaged one counts, so that reading it names what is wrong). Before deleting
    or replacing one, ask ``config_format`` instead: only an intact checkpoint config is proof."""
    file = os.path.join(path, CONFIG)
    return os.path.isfile(file) and config_format(file) != RUN_CONFIG_FORMAT


def checkpoint_exists(path: str) -> bool:
    """Whether a complete checkpoint directory is at ``path`` (or, after an interrupted
    replacement, at ``path.old``)."""
    return any(holds_checkpoint(candidate) for candidate in (path, path + ".old"))


def resolve_checkpoint(path: str) -> str:
    """The checkpoint directory meant by ``path``: a checkpoint itself, or a run directory (its
    ``best`` checkpoint, else its ``last``). A checkpoint whose replacement was interrupted is
    found as ``<path>.old``."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise CheckpointError(f"a checkpoint path must be a non-empty path, got {path!r}")
    path = str(path)
    for candidate in (path, path + ".old", os.path.join(path, "best"), os.path.join(path, "best.old"),
                      os.path.join(path, "last"), os.path.join(path, "last.old")):
        if holds_checkpoint(candidate):
            return candidate
    raise CheckpointError(f"{path}: no fastgen checkpoint there (expected a directory with {CONFIG}, or a run "
                          "directory holding best/ or last/)")


def _check_config(file: str, config: Any) -> dict[str, Any]:
    """The fields every checkpoint config must have, with the types the loaders rely on."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a fastgen checkpoint (no \"format\": \"{FORMAT}\")")
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{file}: \"version\" must be a positive integer, got {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{file}: written by a newer fastgen (format version {version} > {VERSION})")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError(f"{file}: \"model_type\" must be a string naming the model class, got {model_type!r}")
    model_config = config.get("model_config")
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{file}: \"model_config\" must be an object of constructor arguments, "
                              f"got {type(model_config).__name__}")
    return config


def read_json(file: str) -> Any:
    """A config.json's content: strict JSON of at most MAX_CONFIG_BYTES (OSError, UnicodeDecodeError or
    ValueError otherwise; CheckpointError, a ValueError, for a file too large)."""
    if os.path.getsize(file) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{file}: {os.path.getsize(file)} bytes, too large for a checkpoint config")
    with open(file, encoding="utf-8") as f:
        return loads_strict(f.read())


def read_config(path: str) -> tuple[str, dict[str, Any]]:
    """(checkpoint directory, its validated config.json) for ``path`` (see ``resolve_checkpoint``)."""
    path = resolve_checkpoint(path)
    file = os.path.join(path, CONFIG)
    try:
        config = read_json(file)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{file}: not a readable checkpoint config ({e})") from None
    return path, _check_config(file, config)


def _header_shapes(file: str) -> dict[str, tuple[int, ...]]:
    """Tensor names (without DDP's ``module.`` prefix) and shapes of a safetensors file, read from its
    header alone: no tensor data is loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return {k.removeprefix("module."): tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not readable safetensors weights ({e})") from None


def _read_weights(file: str) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file, without DDP's ``module.`` prefixes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not readable safetensors weights ({e})") from None
    return {k.removeprefix("module."): v for k, v in weights.items()}


def _check_shapes(file: str, header: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                  model_type: str) -> None:
    """Refuse weights whose names or shapes differ from the model's state dict."""
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    wrong = sorted(k for k in set(expected) & set(header) if tuple(expected[k]) != tuple(header[k]))
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                 "shapes " + ", ".join(f"{k}: file {list(header[k])}, model {list(expected[k])}" for k in wrong[:3])
                 if wrong else ""]
        raise CheckpointError(f"{file}: the weights do not fit a {model_type} of its config "
                              f"({'; '.join(p for p in parts if p)})")


class _TooLarge(Exception):
    """Raised from inside a model constructor to stop building a model that cannot fit its file."""


def _shapes_on_meta(cls: type, model_config: dict[str, Any], header: dict[str, tuple[int, ...]],
                    where: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of ``cls(**model_config)``, built on the meta device (no memory for
    tensors). Building stops early once the model has clearly more parameters than the file holds, so
    a config such as ``hidden_channels: 10**9`` or ``n_layers: 10**9`` is refused at once."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    # Slack over the file's figures: a constructor may register a parameter more than once.
    max_tensors = 4 * len(header) + 64
    max_elements = 4 * sum(math.prod(s) for s in header.values()) + (1 << 20)
    registered = [0, 0]

    def count(module: torch.nn.Module, name: str, param: torch.Tensor | None) -> None:
        if param is not None:
            registered[0] += 1
            registered[1] += param.numel()
            if registered[0] > max_tensors or registered[1] > max_elements:
                raise _TooLarge

    handle = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            model = cls(**model_config)
    except _TooLarge:
        raise CheckpointError(f"{where}: its config builds a {cls.__name__} with more parameters than its weights "
                              f"file holds ({len(header)} tensors, {max_elements // 4} values)") from None
    except Exception as e:  # the config is data read from a file: whatever its constructor refuses, it is invalid
        raise CheckpointError(f"{where}: its model_config is not a valid {cls.__name__} ({type(e).__name__}: {e})") \
            from None
    finally:
        handle.remove()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _model_class(where: str, config: dict[str, Any]) -> type:
    cls = MODEL_TYPES.get(config["model_type"])
    if cls is None:
        raise CheckpointError(f"{where}: unknown model type {config['model_type']!r}; known: {sorted(MODEL_TYPES)}")
    return cls


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its config, weights, EMA weights (or None) and training state."""

    path: str
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor] | None

    def training_state(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        """Optimiser, scheduler and RNG state (``torch.load(weights_only=True)``: no code runs); the
        keys in ``required`` must be present."""
        file = os.path.join(self.path, TRAINING)
        if not os.path.isfile(file):
            raise CheckpointError(f"{self.path}: holds no training state ({TRAINING}); it cannot be resumed")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged or foreign files
            raise CheckpointError(f"{file}: not a readable training state ({type(e).__name__}: {e})") from None
        missing = [key for key in required if not isinstance(state, dict) or key not in state]
        if missing:
            raise CheckpointError(f"{file}: the training state lacks {missing} (expected keys {list(required)})")
        return state


def _weights_file(path: str, name: str) -> str:
    file = os.path.join(path, name)
    if not os.path.isfile(file):
        raise CheckpointError(f"{path}: the checkpoint has no {name}")
    return file


def load_checkpoint(path: str) -> Checkpoint:
    """Read the checkpoint at ``path`` (see ``resolve_checkpoint``). A missing, truncated or foreign
    file raises a CheckpointError (a ValueError) naming it."""
    path, config = read_config(path)
    weights = _read_weights(_weights_file(path, WEIGHTS))
    ema_file = os.path.join(path, EMA_WEIGHTS)
    ema = _read_weights(ema_file) if os.path.isfile(ema_file) else None
    return Checkpoint(path, config, weights, ema)


def _require_finite(file: str, weights: dict[str, torch.Tensor]) -> None:
    bad = first_non_finite(weights)
    if bad is not None:
        raise CheckpointError(f"{file}: {bad} holds NaN or infinite values (written by a run that had diverged?)")


def _check_same_config(path: str, config: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse to resume a run into a model built with other constructor arguments, naming them."""
    if not hasattr(model, "config"):
        return
    built = json.loads(json.dumps(model.config()))  # as the checkpoint stores it: tuples become lists
    saved = config["model_config"]
    differ = sorted(k for k in set(built) | set(saved) if built.get(k) != saved.get(k))
    if differ:
        raise CheckpointError(f"{path}: the run's {config['model_type']} has "
                              f"{', '.join(f'{k}={saved.get(k)!r}' for k in differ)}; the model to resume has "
                              f"{', '.join(f'{k}={built.get(k)!r}' for k in differ)} (build it with the run's options)")


def resume_state(path: str, model: torch.nn.Module,
                 required: tuple[str, ...] = ("rng",)) -> tuple[Checkpoint, dict[str, Any]]:
    """Read a training checkpoint for ``model``: check that it holds that type of model with weights
    of the model's shapes (from the file headers, before any data is read) and its training state
    (with the keys in ``required``). Nothing is changed yet: the trainer restores the state from
    the returned checkpoint and training state with ``apply_resume``."""
    path, config = read_config(path)
    model_type = config["model_type"]
    if model_type != type(model).__name__:
        raise CheckpointError(f"{path}: holds a {model_type}, not a {type(model).__name__}")
    _check_same_config(path, config, model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    files = [_weights_file(path, WEIGHTS)] + ([os.path.join(path, EMA_WEIGHTS)]
                                              if os.path.isfile(os.path.join(path, EMA_WEIGHTS)) else [])
    for file in files:
        _check_shapes(file, _header_shapes(file), expected, model_type)
    checkpoint = load_checkpoint(path)
    for file, weights in zip(files, (checkpoint.weights, checkpoint.ema_weights)):
        _require_finite(file, weights)
    training = checkpoint.training_state(required)
    rng = training["rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape:
        raise CheckpointError(f"{os.path.join(path, TRAINING)}: \"rng\" is not a CPU generator state "
                              f"(a uint8 tensor of {tuple(torch.get_rng_state().shape)})")
    cuda_rng = training.get("cuda_rng")
    # Its size is checked where a GPU can say what it should be (a CPU resume never reads it).
    cuda_size = torch.cuda.get_rng_state().shape if torch.cuda.is_available() else None
    if cuda_rng is not None and not (isinstance(cuda_rng, torch.Tensor) and cuda_rng.dtype == torch.uint8
                                     and cuda_rng.dim() == 1 and cuda_size in (None, cuda_rng.shape)):
        raise CheckpointError(f"{os.path.join(path, TRAINING)}: \"cuda_rng\" is not a CUDA generator state "
                              "(a uint8 vector of this GPU's generator state size)")
    return checkpoint, training


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The generator states a checkpoint keeps: the CPU's ("rng"), and on a GPU that GPU's
    ("cuda_rng": what the model's own draws on the device use, latents and dropout among them)."""
    states = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def load_training_states(checkpoint: Checkpoint, training: dict[str, Any], targets: dict[str, Any], what: str) -> None:
    """Load ``training[key]`` into each ``targets[key]`` (optimisers, schedulers); a state that does
    not fit this model is a CheckpointError naming the file and ``what`` it held."""
    try:
        for key, target in targets.items():
            target.load_state_dict(training[key])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{os.path.join(checkpoint.path, TRAINING)}: the {what} does not fit this model "
                              f"({type(e).__name__}: {e})") from None


def apply_resume(checkpoint: Checkpoint, training: dict[str, Any], model: torch.nn.Module,
                 device: torch.device | None = None) -> None:
    """Load the checkpoint's weights into ``model`` and restore the global RNG, and the GPU's when
    the run resumes on one and the checkpoint was written on one (the last step of a resume, after
    everything else was checked and restored)."""
    model.load_state_dict(checkpoint.weights)
    torch.set_rng_state(training["rng"])
    if device is not None and device.type == "cuda" and training.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(training["cuda_rng"], device)


def model_from_checkpoint(path: str, device: torch.device | str = "cpu", *, ema: bool = True) -> torch.nn.Module:
    """Rebuild the fastgen model saved at ``path`` (a checkpoint or a run directory): its class and
    constructor arguments from config.json, then its weights (the EMA weights when the checkpoint
    has them and ``ema`` is True). The config is checked against the weights file's header on the
    meta device before anything is allocated, so a config that does not fit its weights, however
    large, is refused at once. Weights holding NaN or infinities are refused. Nothing half-loaded
    is ever returned. The model comes back in eval mode (dropout off), ready to evaluate or sample;
    ``Trainer.fit`` puts it back in training mode."""
    device = resolve_device(device)
    path, config = read_config(path)
    cls = _model_class(path, config)
    ema_file = os.path.join(path, EMA_WEIGHTS)
    file = ema_file if ema and os.path.isfile(ema_file) else _weights_file(path, WEIGHTS)
    header = _header_shapes(file)
    _check_shapes(file, header, _shapes_on_meta(cls, config["model_config"], header, path), config["model_type"])
    weights = _read_weights(file)
    _require_finite(file, weights)
    try:
        model = cls(**config["model_config"])
        model.load_state_dict(weights)
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: the weights do not fit a {config['model_type']} of its config ({e})") \
            from None
    return model.to(device).eval()
