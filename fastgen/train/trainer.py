"""A trainer for any fastgen model that exposes ``loss(x, cond)`` (mean negative log-likelihood
in nats per sub-pixel): Adam, gradient clipping, an optional exponential moving average of the
weights, a progress bar with loss and bits/dim, validation each epoch keeping the best
checkpoint, atomic checkpoints that resume exactly, a metrics log and a sample grid per epoch.
A model with a ``code_discriminator`` (``fastgen.models.AdversarialAutoencoder``) also gets that
discriminator's update and the encoder's adversarial update on every batch, each with its own
Adam optimiser.

Exact resumption: the batch order of epoch e is a permutation drawn from a generator seeded
with (seed, e), so a run restarted from a checkpoint at step s of epoch e replays the same
batches from s on; the checkpoint holds the weights, the optimiser and scheduler state, and the
global RNG state (dropout and anything else drawing from it).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fastgen.data import ImageDataset
from fastgen.train._validate import MAX_COUNT, MAX_EPOCHS, MAX_SEED, check_bool, check_float, check_int
from fastgen.train.checkpoint import (Checkpoint, CheckpointError, apply_resume, load_training_states, resume_state,
                                      rng_states, save_checkpoint)
from fastgen.train.distributed import (LossModule, check_shards, global_mean, rank_and_world, resolve_device, shard,
                                      shard_weight)
from fastgen.train.ema import EMA
from fastgen.train.evaluate import QualityEvaluation, bits_per_dim_on, check_quality_options
from fastgen.train.grid import save_grid
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.run_loop import RunLoop

LN2 = math.log(2.0)
ADVERSARIAL_BETAS = (0.5, 0.999)
MAX_GRID_SAMPLES = 100  # a grid of 100 x 100 images is already larger than anyone looks at


class TrainingDiverged(RuntimeError):
    """A training loss, a gradient norm, a validation figure or the weights became NaN or infinite.
    The run stopped before the step that would have used them; no checkpoint holds them."""


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation of range(n) drawn from (seed, epoch) alone, so
    that a resumed run replays the batches it had not reached."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return list(torch.randperm(n, generator=g).split(batch_size))


def epoch_batch_sizes(n: int, batch_size: int) -> set[int]:
    """The sizes of ``epoch_batches``' batches: full ones and the last, partial one (if any)."""
    return {min(n, batch_size), n % batch_size or batch_size}


def check_training_data(data: object, name: str, *, optional: bool = False) -> None:
    """``data`` is a non-empty ImageDataset (or None when ``optional``)."""
    if data is None and optional:
        return
    if not isinstance(data, ImageDataset):
        raise TypeError(f"{name} must be a fastgen.data.ImageDataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} ({data.name}) holds no images")


def check_model_fits_data(model: torch.nn.Module, data: ImageDataset) -> None:
    """The model's image shape and levels are the data's (checked before training, not after an epoch)."""
    shape = (getattr(model, "in_channels", None), *getattr(model, "image_size", (None, None)))
    if None not in shape and tuple(shape) != tuple(data.shape):
        raise ValueError(f"the model takes images of shape {tuple(shape)}, {data.name} has {tuple(data.shape)}")
    levels = getattr(model, "levels", None)
    if levels is not None and levels != data.levels:
        raise ValueError(f"the model has {levels} levels, {data.name} has {data.levels} (quantize the data: "
                         f"data.quantize({levels}))")


def diverged(what: str, value: object, step: int, epoch: int, last_path: str, saved_step: int | None,
             advice: str) -> TrainingDiverged:
    """The error that stops a run at ``step`` whose ``what`` became ``value``."""
    if saved_step is not None:
        kept, then = (f"the last good checkpoint, {last_path} (step {saved_step}), is kept",
                      "resume the run or start it over (--resume or --overwrite)")
    else:
        kept, then = "no checkpoint had been written yet", "start it over (--overwrite)"
    return TrainingDiverged(f"training diverged at step {step} (epoch {epoch}): {what} is {value}; {kept}. "
                            f"{advice}, then {then}")


def training_counters(checkpoint: Checkpoint, batches_per_epoch: int, train_images: int) -> tuple[int, int, int]:
    """(epoch, step_in_epoch, step) of a training checkpoint, checked against this run's data."""
    meta, file = checkpoint.config, os.path.join(checkpoint.path, "config.json")
    counters = []
    for key in ("epoch", "step_in_epoch", "step"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{file}: \"{key}\" must be a non-negative integer, got {value!r}")
        counters.append(value)
    saved_images = meta.get("train_images")
    if saved_images is not None and saved_images != train_images:
        raise CheckpointError(f"{checkpoint.path}: the run was trained on {saved_images} images, this training set "
                              f"has {train_images}; resume it with its own data")
    if counters[1] > batches_per_epoch:
        raise CheckpointError(f"{file}: step_in_epoch {counters[1]} is past the {batches_per_epoch} batches of an "
                              "epoch of this data")
    return counters[0], counters[1], counters[2]


def float_list(file: str, key: str, values: object) -> list[float]:
    """A list of numbers (None where an epoch had none) read from a checkpoint's config."""
    if not isinstance(values, list) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                               for v in values):
        raise CheckpointError(f"{file}: \"{key}\" must be a list of numbers, got {values!r:.80}")
    return list(values)


def resumed_config_changes(path: str, saved: object, config: Any, fixed: tuple[str, ...],
                           noted: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The hyper-parameters in ``noted`` whose value differs from the checkpoint's ``train_config``
    (as {name: (saved, new)}). Those in ``fixed`` must not differ: the batch order and the position
    in an epoch depend on them, so the resume would not be exact."""
    def plain(value: Any) -> Any:  # a tuple of the config is a list in its JSON
        return list(value) if isinstance(value, (list, tuple)) else value

    if not isinstance(saved, dict):
        return {}
    for name in fixed:
        if name in saved and plain(saved[name]) != plain(getattr(config, name)):
            raise CheckpointError(f"{path}: the run was trained with {name}={saved[name]!r}, not "
                                  f"{getattr(config, name)!r}; a resume continues it exactly, so {name} must stay")
    return {name: (saved[name], getattr(config, name)) for name in noted
            if name in saved and plain(saved[name]) != plain(getattr(config, name))}


def warn_changes(path: str, changes: dict[str, tuple[Any, Any]], step: int) -> None:
    for name, (old, new) in changes.items():
        warnings.warn(f"resuming {path}: {name} changes from {old} to {new} (from step {step} on)", stacklevel=3)


@dataclass
class TrainConfig:
    """Hyper-parameters of a run.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam learning rate (finite, > 0); multiplied by ``lr_decay`` (in (0, 1]) after every
            epoch. A resume with another lr or lr_decay continues with the new value (with a warning).
        grad_clip: maximum gradient norm (> 0; None: no clipping).
        seed: seeds the batch order and the global RNG (0 <= seed < 2**32).
        checkpoint_every: also write ``last`` every this many steps (None: at epoch ends only).
        grid_samples: images per row of the per-epoch sample grid (0: none, at most 100); a
            conditional model draws this many per class, one row per class.
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.999)
            and use it for validation, the best checkpoint and sample grids (None: off).
        amp: compute the training loss under bfloat16 autocast (weights, gradients, optimiser
            and the loss's accumulation stay float32; validation runs in float32).
        log_every: write the step loss to metrics.jsonl every this many steps.
        eval_every: every this many epochs, score ``eval_samples`` samples against the validation
            split (the training split without one) with ``eval_metrics`` (a comma-separated subset
            of fid, kid, is, pr; see ``fastgen.metrics.sample_quality``), logged as ``quality/*``
            (None: never).
        progress: show a progress bar.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 1.0
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int | None = None
    grid_samples: int = 10
    ema_decay: float | None = None
    amp: bool = False
    log_every: int = 50
    eval_every: int | None = None
    eval_samples: int = 1000
    eval_metrics: str = "fid,kid,is,pr"
    progress: bool = True

    def __post_init__(self):
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_COUNT)
        check_quality_options(self.eval_every, self.eval_samples, self.eval_metrics)
        check_float("lr", self.lr, 0.0, low_open=True)
        check_float("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        check_float("grad_clip", self.grad_clip, 0.0, low_open=True, none=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("checkpoint_every", self.checkpoint_every, 1, MAX_COUNT, none=True)
        check_int("grid_samples", self.grid_samples, 0, MAX_GRID_SAMPLES)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, low_open=True, high_open=True, none=True)
        check_bool("amp", self.amp)
        check_int("log_every", self.log_every, 1, MAX_COUNT)
        check_bool("progress", self.progress)


@dataclass
class History:
    train_bpd: list[float] = field(default_factory=list)
    val_bpd: list[float] = field(default_factory=list)
    best_val_bpd: float = math.inf
    best_epoch: int = -1

    @classmethod
    def from_checkpoint(cls, file: str, saved: object) -> History:
        """The history saved in a checkpoint's config (where no best exists yet, best_val_bpd is null)."""
        if not isinstance(saved, dict) or set(saved) != {"train_bpd", "val_bpd", "best_val_bpd", "best_epoch"}:
            raise CheckpointError(f"{file}: \"history\" must hold train_bpd, val_bpd, best_val_bpd and best_epoch")
        best, epoch = saved["best_val_bpd"], saved["best_epoch"]
        if not (best is None or isinstance(best, (int, float))) or not isinstance(epoch, int):
            raise CheckpointError(f"{file}: \"history\" has best_val_bpd {best!r} and best_epoch {epoch!r}")
        return cls(float_list(file, "train_bpd", saved["train_bpd"]), float_list(file, "val_bpd", saved["val_bpd"]),
                   math.inf if best is None else float(best), epoch)


class Trainer(RunLoop):
    """Train ``model`` on ``train_data``, validating on ``val_data``; files go to ``out_dir``:
    the checkpoint directories ``last`` (resume point) and ``best`` (lowest validation bits/dim),
    ``metrics.jsonl`` and ``samples/epoch_NNN.png``. A class-conditional model
    (``model.n_classes``) gets the labels as ``cond``.

    ``fit`` refuses to start afresh in a directory that holds a run (see
    ``fastgen.train.run_dir``), and stops with ``TrainingDiverged`` when a loss, a gradient norm, a
    validation figure or the weights become NaN or infinite, keeping the last good checkpoint.

    In a process group (``torchrun``, see ``fastgen.train.distributed``) every process takes its
    shard of each global batch of ``batch_size`` images, DistributedDataParallel averages the
    gradients, and only rank 0 writes checkpoints, logs and grids."""

    def __init__(self, model: torch.nn.Module, train_data: ImageDataset, val_data: ImageDataset | None,
                 out_dir: str, config: TrainConfig | None = None, *, device: torch.device | str = "cpu"):
        if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "loss", None)):
            raise TypeError(f"model must be a torch.nn.Module with loss(x, cond), got {type(model).__name__}")
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        check_training_data(train_data, "train_data")
        check_training_data(val_data, "val_data", optional=True)
        for data in (train_data, val_data):
            if data is not None:
                check_model_fits_data(model, data)
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
        self.config = config or TrainConfig()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_data, self.val_data, self.out_dir = train_data, val_data, str(out_dir)
        self.conditional = getattr(model, "n_classes", None) is not None
        if self.conditional and train_data.labels is None:
            raise ValueError(f"the model is class-conditional but {train_data.name} has no labels")
        self.rank, self.world = rank_and_world()
        check_shards(epoch_batch_sizes(len(train_data), self.config.batch_size), self.world)
        # A model with a code discriminator (the adversarial autoencoder) adds two updates per step.
        self.adversary: torch.nn.Module | None = getattr(model, "code_discriminator", None)
        if self.adversary is not None and self.world > 1:
            raise ValueError(f"{type(model).__name__} trains in one process (its adversarial updates are not "
                             "distributed): run it without torchrun")
        self.step_module: torch.nn.Module = LossModule(self.model)
        if self.world > 1:
            # static_graph: the same parameters take part in every step, and some never do (the
            # last Gated layer's horizontal output feeds nothing); DDP then skips them cheaply.
            self.step_module = torch.nn.parallel.DistributedDataParallel(self.step_module, static_graph=True)
        adversary = {id(p) for p in self.adversary.parameters()} if self.adversary is not None else set()
        self.params = [p for p in self.model.parameters() if id(p) not in adversary]
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr)
        self.adversarial_optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.adversary is not None:
            # GAN-style betas for the two adversarial updates, as in DCGAN; their rate does not decay.
            self.adversarial_optimizers = {
                "opt_discriminator": torch.optim.Adam(self.adversary.parameters(), lr=self.config.lr,
                                                      betas=ADVERSARIAL_BETAS),
                "opt_encoder": torch.optim.Adam(self.model.encoder_parameters(), lr=self.config.lr,
                                                betas=ADVERSARIAL_BETAS)}
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=self.config.lr_decay)
        self.ema = EMA(self.model, self.config.ema_decay) if self.config.ema_decay else None
        self.history = History()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: list[float] = []  # this epoch's step losses so far (the epoch's mean)
        self.adversarial_losses: dict[str, float] = {}  # the last step's, for a model with a code discriminator
        self.last_path = os.path.join(self.out_dir, "last")
        self.best_path = os.path.join(self.out_dir, "best")
        self.saved_step: int | None = None  # the step of the checkpoint in last_path, once there is one
        self.log: MetricsLog | None = None
        # Checked on every process, so that a request that cannot be scored stops them all; under
        # torchrun only rank 0 scores samples and the others wait at the next step's all-reduce,
        # so an evaluation must finish within the process group's timeout (30 minutes by default).
        cfg = self.config
        self.quality = (QualityEvaluation(self.model, val_data or train_data, cfg.eval_samples, cfg.eval_metrics,
                                          cfg.seed) if cfg.eval_every else None)

    # -- state ---------------------------------------------------------------------------------
    def save(self, path: str | None = None) -> None:
        """Write a checkpoint directory (default ``out_dir/last``) that ``resume`` continues exactly
        (rank 0 only). Weights that are not finite are never written: TrainingDiverged."""
        self._check_weights()
        if self.rank != 0:
            return
        save_checkpoint(
            path or self.last_path, model_type=type(self.model).__name__,
            model_config=self.model.config() if hasattr(self.model, "config") else {},
            weights=self.model.state_dict(), ema_weights=self.ema.state_dict() if self.ema else None,
            training={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                      **rng_states(self.device),
                      **{name: opt.state_dict() for name, opt in self.adversarial_optimizers.items()}},
            meta={"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                  "train_images": len(self.train_data), "epoch_losses": list(self.epoch_losses),
                  "history": asdict(self.history), "train_config": asdict(self.config)},
        )
        if path is None or path == self.last_path:
            self.saved_step = self.step

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last``) exactly where it was written. The
        checkpoint must hold this type of model with these shapes, trained on a data set of this
        size with this batch size and seed; a changed lr, lr_decay, grad_clip, ema_decay or amp
        applies from here on, with a warning."""
        path = path or self.last_path
        checkpoint, training = resume_state(path, self.model,
                                            required=("optimizer", "scheduler", "rng", *self.adversarial_optimizers))
        file = os.path.join(checkpoint.path, "config.json")
        meta = checkpoint.config
        changes = resumed_config_changes(checkpoint.path, meta.get("train_config"), self.config,
                                         fixed=("batch_size", "seed"),
                                         noted=("lr", "lr_decay", "grad_clip", "ema_decay", "amp"))
        epoch, step_in_epoch, step = training_counters(
            checkpoint, math.ceil(len(self.train_data) / self.config.batch_size), len(self.train_data))
        epoch_losses = float_list(file, "epoch_losses", meta.get("epoch_losses"))
        history = History.from_checkpoint(file, meta.get("history"))
        load_training_states(checkpoint, training, {"optimizer": self.optimizer, "scheduler": self.scheduler,
                                                    **self.adversarial_optimizers},
                             "optimiser or scheduler state")
        apply_resume(checkpoint, training, self.model, self.device)
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint.ema_weights if checkpoint.ema_weights is not None
                                     else self.model.state_dict())
        if "lr" in changes:
            for optimizer in (self.optimizer, *self.adversarial_optimizers.values()):
                for group in optimizer.param_groups:
                    group["lr"] = self.config.lr
        self.scheduler.gamma = self.config.lr_decay
        self.epoch, self.step_in_epoch, self.step = epoch, step_in_epoch, step
        self.epoch_losses, self.history, self.saved_step = epoch_losses, history, step
        warn_changes(checkpoint.path, changes, step)

    def averaged(self) -> contextlib.AbstractContextManager:
        """A block in which the model holds its EMA weights (its own weights without EMA)."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(self.model)

    # -- checks --------------------------------------------------------------------------------
    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        lr = self.optimizer.param_groups[0]["lr"]
        advice = f"Lower the learning rate (lr={lr:g})" + ("" if self.config.grad_clip else " or clip the gradients")
        return diverged(what, value, self.step + 1, self.epoch + 1, self.last_path, self.saved_step, advice)

    def _grad_norm(self, params: list[torch.nn.Parameter] | None = None) -> float:
        """The total norm of the gradients of ``params`` (default: those the main optimiser
        updates), after clipping them to ``grad_clip`` when set."""
        params = [p for p in (self.params if params is None else params) if p.grad is not None]
        if self.config.grad_clip is not None:
            return float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))

    # -- loop ----------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[torch.Tensor]:
        return epoch_batches(len(self.train_data), self.config.batch_size, self.config.seed, epoch)

    def _loss(self, data: ImageDataset, index: torch.Tensor) -> torch.Tensor:
        """The training loss of a global batch: this process's shard, weighted so that the mean
        over processes that DistributedDataParallel takes is the mean over the whole batch."""
        part = shard(index, self.rank, self.world)
        x = data.images[part].to(self.device, torch.long)
        cond = data.labels[part].to(self.device) if self.conditional else None
        return self.step_module(x, cond) * shard_weight(len(part), self.world, len(index))

    def evaluate(self, data: ImageDataset, batch_size: int = 256) -> float:
        """Mean bits/dim of the model (its EMA weights when kept) on ``data``."""
        with self.averaged():
            return bits_per_dim_on(self.model, data, batch_size=batch_size, device=self.device)

    def sample_grid(self, path: str, per_class: int | None = None) -> str:
        """Sample (one row per class for a conditional model) with a fixed seed; write a PNG."""
        per_class = per_class or self.config.grid_samples
        g = torch.Generator().manual_seed(self.config.seed)  # the same noise every epoch: comparable grids
        with self.averaged():
            if self.conditional:
                labels = torch.arange(self.model.n_classes).repeat_interleave(per_class).to(self.device)
                images = self.model.sample(len(labels), labels, generator=g)
            else:
                images = self.model.sample(per_class * per_class, generator=g)
        return save_grid(path, images, self.model.levels, per_class)

    def _train_epoch(self) -> None:
        cfg = self.config
        batches = self._batches(self.epoch)
        from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

        bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not cfg.progress or self.rank != 0,
                   leave=False, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
        try:
            for index in batches[self.step_in_epoch:]:
                value = self._train_step(index)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", bpd=f"{value / LN2:.3f}")
                if self.step % cfg.log_every == 0 and self.log:
                    self.log.write(self.step, loss=value, bpd=value / LN2, **self.adversarial_losses)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
        self._end_epoch(sum(self.epoch_losses) / max(1, len(self.epoch_losses)) / LN2)

    def _train_step(self, index: torch.Tensor) -> float:
        """One optimiser step on a batch; returns its loss. A non-finite loss or gradient norm
        stops the run before the weights change."""
        cfg = self.config
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            loss = self._loss(self.train_data, index)
        value = global_mean(loss, self.world)
        self._check_finite("the training loss", value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._check_finite("the gradient norm", self._grad_norm())
        self.optimizer.step()
        if self.adversary is not None:
            self.adversarial_losses = self._adversarial_step(index)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.step_in_epoch += 1
        self.epoch_losses.append(value)
        return value

    def _adversarial_step(self, index: torch.Tensor) -> dict[str, float]:
        """The code discriminator's update, then the encoder's as its generator (see
        ``fastgen.models.AdversarialAutoencoder``); returns both losses."""
        model = self.model
        x = self.train_data.images[index].to(self.device, torch.long)
        labels = self.train_data.labels[index].to(self.device) if self.conditional else None
        d_loss = self._update("opt_discriminator", "discriminator", lambda: model.discriminator_loss(x, labels))
        self.adversary.requires_grad_(False)  # the encoder's update needs no discriminator gradients
        try:
            g_loss = self._update("opt_encoder", "encoder's adversarial", lambda: model.encoder_loss(x, labels))
        finally:
            self.adversary.requires_grad_(True)
        return {"d_loss": d_loss, "g_loss": g_loss}

    def _update(self, name: str, what: str, loss_fn) -> float:
        """One step of the adversarial optimiser ``name`` on ``loss_fn()``; stops the run on a
        non-finite loss or gradient norm before the weights change."""
        optimizer = self.adversarial_optimizers[name]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp):
            loss = loss_fn()
        value = loss.item()
        self._check_finite(f"the {what} loss", value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._check_finite(f"the {what} gradient norm",
                           self._grad_norm([p for group in optimizer.param_groups for p in group["params"]]))
        optimizer.step()
        return value

    def _end_epoch(self, train_bpd: float) -> None:
        self._check_weights()
        h = self.history
        h.train_bpd.append(train_bpd)
        message = f"epoch {self.epoch + 1}: train {train_bpd:.4f} bits/dim"
        if self.val_data is not None:
            val = self.evaluate(self.val_data)
            self._check_finite("the validation bits/dim", val)
            h.val_bpd.append(val)
            message += f", val {val:.4f} bits/dim"
            if val < h.best_val_bpd:
                h.best_val_bpd, h.best_epoch = val, self.epoch
                message += " (best)"
        quality = {}
        if self.quality is not None and self.rank == 0 and (self.epoch + 1) % self.config.eval_every == 0:
            with self.averaged():
                quality, shown = self.quality(self.model)
            message += f"; {shown}"
        if self.log:
            self.log.write(self.step, epoch=self.epoch + 1, train_bpd=train_bpd,
                           val_bpd=h.val_bpd[-1] if self.val_data is not None else None,
                           lr=self.optimizer.param_groups[0]["lr"], **quality)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = []
        self.scheduler.step()
        if h.best_epoch == self.epoch - 1:
            self.save(self.best_path)
        if self.config.grid_samples and self.rank == 0:
            path = self.sample_grid(os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png"))
            message += f", samples {path}"
        self.save()
        if self.config.progress and self.rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(message)
