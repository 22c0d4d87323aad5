"""A trainer for ``fastgen.models.GAN``: alternating discriminator (critic) and generator updates
with the model's ``gan_loss`` kind, an optional WGAN-GP gradient penalty, a progress bar with both
losses, atomic checkpoints that resume exactly, a metrics log, and a sample grid per epoch drawn
from the same latent noise every epoch, so that the grids of successive epochs are comparable.

One step takes one batch of real images: the discriminator is updated on it, and every
``n_critic``-th step the generator is updated too (WGAN and WGAN-GP use n_critic = 5). Resumption
follows ``fastgen.train.Trainer``: the batch order of an epoch depends only on (seed, epoch), and a
checkpoint holds both networks, both optimisers, the generator's moving average and the global RNG
state (the latent noise).

Under ``torchrun`` every process computes its shard of each global batch from latents and
interpolation points drawn for the whole batch (the same draws on every process: they share the
seed), and the two networks' gradients are averaged over the processes before each update, so
that a run of N processes follows the run of one process with the same global batch (up to
floating-point summation order); the processes start from rank 0's weights. Batch normalisation
normalises over each process's shard, as it does under DistributedDataParallel, and the minibatch
standard deviation (ProgressiveGAN's critic) groups the samples of each shard: a model with either
(DCGAN's generator, ProgressiveGAN) is not expected to match one process exactly.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from fastgen.data import ImageDataset
from fastgen.models._checks import check_labels
from fastgen.models.gan import GAN
from fastgen.ops import gan_loss
from fastgen.train._validate import (MAX_COUNT, MAX_EPOCHS, MAX_SEED, check_betas, check_bool, check_float,
                                     check_int)
from fastgen.train.checkpoint import (CheckpointError, apply_resume, load_training_states, resume_state,
                                      rng_states, save_checkpoint)
from fastgen.train.distributed import (broadcast_from_rank0, check_shards, global_mean, rank_and_world, resolve_device,
                                      shard, shard_weight)
from fastgen.train.ema import EMA
from fastgen.train.evaluate import QualityEvaluation, check_quality_options
from fastgen.train.grid import save_grid
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.run_loop import RunLoop
from fastgen.train.trainer import (MAX_GRID_SAMPLES, TrainingDiverged, check_model_fits_data, check_training_data,
                                   diverged, epoch_batch_sizes, epoch_batches, float_list, resumed_config_changes,
                                   training_counters, warn_changes)


@dataclass
class GANTrainConfig:
    """Hyper-parameters of a GAN run.

    Attributes:
        epochs: passes over the training set.
        batch_size: real images per step.
        lr_generator, lr_discriminator: Adam learning rates (finite, > 0; a resume with other values
            continues with them, with a warning).
        betas: Adam's betas, each in [0, 1) ((0.5, 0.999) as in DCGAN; WGAN-GP uses (0.0, 0.9)).
        n_critic: discriminator updates per generator update.
        gp_weight: weight of the WGAN-GP gradient penalty (None: no penalty).
        drift: weight of the drift term ``drift * mean(D(real)^2)`` that keeps a Wasserstein
            critic's scores near 0 (Karras et al. use 0.001; 0: none).
        ema_decay: keep an exponential moving average of the generator's weights with this decay
            (e.g. 0.999), updated after every generator step (warmed up: update t decays by
            min(ema_decay, (1 + t) / (10 + t)), see ``fastgen.train.EMA``) and used for grids,
            evaluation and ``fastgen.load`` (None: off).
        amp: run both networks under bfloat16 autocast (weights, gradients, optimisers and the
            losses stay float32).
        seed: seeds the batch order, the global RNG and the grid's fixed latent noise.
        checkpoint_every: also write ``last`` every this many steps (None: at epoch ends only).
        grid_samples: images per grid row (a conditional model gets one row per class; 0: no grids).
        log_every: write the step losses to metrics.jsonl every this many steps.
        eval_every: every this many epochs, score ``eval_samples`` samples against the trainer's
            ``eval_data`` (the training split without one) with ``eval_metrics`` (a comma-separated
            subset of fid, kid, is, pr), logged as ``quality/*`` (None: never).
        progress: show a progress bar.
    """

    epochs: int = 20
    batch_size: int = 64
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    gp_weight: float | None = None
    drift: float = 0.0
    ema_decay: float | None = None
    amp: bool = False
    seed: int = 0
    checkpoint_every: int | None = None
    grid_samples: int = 8
    log_every: int = 50
    eval_every: int | None = None
    eval_samples: int = 1000
    eval_metrics: str = "fid,kid,is,pr"
    progress: bool = True

    def __post_init__(self):
        self._check_length()
        check_quality_options(self.eval_every, self.eval_samples, self.eval_metrics)
        check_float("lr_generator", self.lr_generator, 0.0, low_open=True)
        check_float("lr_discriminator", self.lr_discriminator, 0.0, low_open=True)
        self.betas = check_betas(self.betas)
        check_int("n_critic", self.n_critic, 1, MAX_COUNT)
        check_float("gp_weight", self.gp_weight, 0.0, low_open=True, none=True)
        check_float("drift", self.drift, 0.0)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, low_open=True, high_open=True, none=True)
        check_bool("amp", self.amp)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("checkpoint_every", self.checkpoint_every, 1, MAX_COUNT, none=True)
        check_int("grid_samples", self.grid_samples, 0, MAX_GRID_SAMPLES)
        check_int("log_every", self.log_every, 1, MAX_COUNT)
        check_bool("progress", self.progress)

    def _check_length(self) -> None:
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_COUNT)


@dataclass
class GANHistory:
    """Per-epoch means of the discriminator and generator losses (None for an epoch in which the
    generator was never updated: fewer steps than n_critic)."""

    d_loss: list[float | None] = field(default_factory=list)
    g_loss: list[float | None] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, file: str, saved: object) -> GANHistory:
        if not isinstance(saved, dict) or set(saved) != {"d_loss", "g_loss"}:
            raise CheckpointError(f"{file}: \"history\" must hold d_loss and g_loss")
        return cls(float_list(file, "d_loss", saved["d_loss"]), float_list(file, "g_loss", saved["g_loss"]))


class GANTrainer(RunLoop):
    """Train ``model`` (a ``fastgen.models.GAN``) on ``train_data``; files go to ``out_dir``: the
    checkpoint directory ``last``, ``metrics.jsonl`` and ``samples/epoch_NNN.png``. A
    class-conditional model gets the batch's labels, for both networks. Like ``Trainer``, ``fit``
    refuses to start afresh in a directory that holds a run, and stops with TrainingDiverged when a
    loss, a gradient norm or the weights become NaN or infinite. In a process group (``torchrun``)
    only rank 0 writes checkpoints, logs and grids (see the module docstring)."""

    # Hyper-parameters a resume must keep (the batch order depends on them) and those it may change.
    fixed_on_resume: tuple[str, ...] = ("batch_size", "seed")
    changeable_on_resume: tuple[str, ...] = ("lr_generator", "lr_discriminator", "betas", "n_critic", "gp_weight",
                                             "drift", "ema_decay", "amp")

    def __init__(self, model: GAN, train_data: ImageDataset, out_dir: str, config: GANTrainConfig | None = None, *,
                 device: torch.device | str = "cpu", eval_data: ImageDataset | None = None):
        if not isinstance(model, GAN):
            raise TypeError(f"model must be a fastgen.models.GAN (DCGAN, MLPGAN, ProgressiveGAN), got "
                            f"{type(model).__name__}")
        if config is not None and not isinstance(config, GANTrainConfig):
            raise TypeError(f"config must be a GANTrainConfig, got {type(config).__name__}")
        check_training_data(train_data, "train_data")
        check_model_fits_data(model, train_data)
        check_training_data(eval_data, "eval_data", optional=True)
        if eval_data is not None:
            check_model_fits_data(model, eval_data)
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
        self.config = config or GANTrainConfig()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_data, self.eval_data, self.out_dir = train_data, eval_data, str(out_dir)
        self.conditional = model.n_classes is not None
        if self.conditional and train_data.labels is None:
            raise ValueError(f"the model is class-conditional but {train_data.name} has no labels")
        self.rank, self.world = rank_and_world()
        check_shards(self._batch_sizes(), self.world)
        broadcast_from_rank0(self.model)
        cfg = self.config
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr_generator, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr_discriminator, betas=cfg.betas)
        self.ema = EMA(model.generator, cfg.ema_decay, warmup=True) if cfg.ema_decay else None
        self.history = GANHistory()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: dict[str, list[float]] = {"d": [], "g": []}
        self.last_path = os.path.join(self.out_dir, "last")
        self.saved_step: int | None = None  # the step of the checkpoint in last_path, once there is one
        # The grid's latents: drawn once from the seed, the same for every epoch and after a resume.
        self.grid_noise = model.noise(max(1, cfg.grid_samples) * (model.n_classes or max(1, cfg.grid_samples)),
                                      torch.Generator(self.device).manual_seed(cfg.seed))
        self.log: MetricsLog | None = None
        # Checked on every process, scored by rank 0 alone (as Trainer's, within the group's timeout).
        self.quality = (QualityEvaluation(self.model, eval_data or train_data, cfg.eval_samples, cfg.eval_metrics,
                                          cfg.seed) if cfg.eval_every else None)

    # -- state ---------------------------------------------------------------------------------
    def _averaged_weights(self) -> dict[str, torch.Tensor] | None:
        """The model's state with the generator's moving average in place of its weights: what
        ``fastgen.load`` (with ema=True) builds the model from."""
        if self.ema is None:
            return None
        return {**self.model.state_dict(), **{f"generator.{k}": v for k, v in self.ema.state_dict().items()}}

    def _meta(self) -> dict:
        """What a checkpoint's config records beside the weights (subclasses add their own)."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                "train_images": len(self.train_data), "epoch_losses": self.epoch_losses,
                "history": asdict(self.history), "train_config": asdict(self.config),
                "ema_updates": self.ema.updates if self.ema is not None else 0}

    def save(self, path: str | None = None) -> None:
        """Write a checkpoint directory (default ``out_dir/last``) that ``resume`` continues exactly
        (rank 0 only). Weights that are not finite are never written: TrainingDiverged."""
        self._check_weights()
        if self.rank != 0:
            return
        save_checkpoint(
            path or self.last_path, model_type=type(self.model).__name__, model_config=self.model.config(),
            weights=self.model.state_dict(), ema_weights=self._averaged_weights(),
            training={"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), **rng_states(self.device)},
            meta=self._meta(),
        )
        if path is None or path == self.last_path:
            self.saved_step = self.step

    def _steps_per_epoch(self) -> int:
        """The most steps an epoch of this run can have (what a checkpoint's step_in_epoch is checked against)."""
        return math.ceil(len(self.train_data) / self.config.batch_size)

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last``) exactly where it was written (the
        checks of ``Trainer.resume``; changed learning rates, betas, n_critic, gp_weight, drift,
        ema_decay or amp apply from here on, with a warning; an EMA started by a resume starts
        from the current generator)."""
        checkpoint, training = resume_state(path or self.last_path, self.model, required=("opt_g", "opt_d", "rng"))
        file, meta = os.path.join(checkpoint.path, "config.json"), checkpoint.config
        changes = resumed_config_changes(checkpoint.path, meta.get("train_config"), self.config,
                                         fixed=self.fixed_on_resume, noted=self.changeable_on_resume)
        epoch, step_in_epoch, step = training_counters(checkpoint, self._steps_per_epoch(), len(self.train_data))
        losses = meta.get("epoch_losses")
        if not isinstance(losses, dict) or set(losses) != {"d", "g"}:
            raise CheckpointError(f"{file}: \"epoch_losses\" must hold the lists d and g")
        epoch_losses = {k: float_list(file, f"epoch_losses.{k}", v) for k, v in losses.items()}
        history = GANHistory.from_checkpoint(file, meta.get("history"))
        updates = meta.get("ema_updates", 0)
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise CheckpointError(f"{file}: \"ema_updates\" must be a non-negative integer, got {updates!r}")
        load_training_states(checkpoint, training, {"opt_g": self.opt_g, "opt_d": self.opt_d},
                             "state of the two optimisers")
        apply_resume(checkpoint, training, self.model, self.device)
        if self.ema is not None:
            saved = checkpoint.ema_weights
            self.ema.load_state_dict({k[len("generator."):]: v for k, v in saved.items() if k.startswith("generator.")}
                                     if saved is not None else self.model.generator.state_dict())
            self.ema.updates = updates if saved is not None else 0
        cfg = self.config
        for optimizer, lr in ((self.opt_g, cfg.lr_generator), (self.opt_d, cfg.lr_discriminator)):
            for group in optimizer.param_groups:  # the new values when they changed, the saved ones otherwise
                group["lr"], group["betas"] = lr, cfg.betas
        self.epoch, self.step_in_epoch, self.step = epoch, step_in_epoch, step
        self.epoch_losses, self.history, self.saved_step = epoch_losses, history, step
        warn_changes(checkpoint.path, changes, step)

    def averaged(self) -> contextlib.AbstractContextManager:
        """A block in which the generator holds its moving-average weights (its own without EMA)."""
        G = self.model.generator
        return self.ema.applied(G) if self.ema is not None else contextlib.nullcontext(G)

    # -- checks --------------------------------------------------------------------------------
    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        cfg = self.config
        return diverged(what, value, self.step + 1, self.epoch + 1, self.last_path, self.saved_step,
                        f"Lower the learning rates (lr_generator={cfg.lr_generator:g}, "
                        f"lr_discriminator={cfg.lr_discriminator:g})")

    def _grad_norm(self, network: torch.nn.Module) -> float:
        return float(torch.nn.utils.get_total_norm([p.grad for p in network.parameters() if p.grad is not None]))

    # -- one step ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.amp)

    def _average_gradients(self, network: torch.nn.Module) -> None:
        """The mean of every process's gradients (one flat all-reduce; a no-op in one process)."""
        if self.world == 1:
            return
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def _update(self, what: str, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                loss: torch.Tensor) -> float:
        """One optimiser step of ``network`` on its (shard) loss; returns the global loss. A
        non-finite loss or gradient norm raises TrainingDiverged before the network changes."""
        value = global_mean(loss, self.world)
        self._check_finite(f"the {what} loss", value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._average_gradients(network)
        self._check_finite(f"the {what}'s gradient norm", self._grad_norm(network))
        optimizer.step()
        return value

    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        """Update the discriminator on one (global) batch, and the generator every ``n_critic``
        steps; returns the losses ("g" only when the generator was updated). A non-finite loss or
        gradient norm raises TrainingDiverged before the network it belongs to changes."""
        cfg, model, kind = self.config, self.model, self.model.loss_kind
        # Drawn for the whole global batch on every process, so that each takes its part of the
        # same draws (one process draws exactly these).
        z_d = model.noise(len(index))
        alpha = torch.rand(len(index), device=self.device) if cfg.gp_weight is not None else None
        part = shard(torch.arange(len(index)), self.rank, self.world)
        weight = shard_weight(len(part), self.world, len(index))
        index = index[part]
        real = model.training_view(model.to_unit(self.train_data.images[index].to(self.device)))
        labels = self.train_data.labels[index].to(self.device) if self.conditional else None
        # Checked once here; the networks are then called directly, not through generate/discriminate.
        labels = check_labels(labels, len(index), model.n_classes)
        G, D = model.generator, model.discriminator
        with torch.no_grad(), self._autocast():
            fake = G(z_d[part], labels).float()
        with self._autocast():
            real_logits, fake_logits = D(real, labels).float(), D(fake, labels).float()
        d_loss = gan_loss(real_logits, fake_logits, kind=kind)
        if cfg.drift:
            d_loss = d_loss + cfg.drift * real_logits.square().mean()
        if cfg.gp_weight is not None:
            with self._autocast():
                d_loss = d_loss + model.gradient_penalty(real, fake, labels, weight=cfg.gp_weight, alpha=alpha[part])
        losses = {"d": self._update("discriminator", D, self.opt_d, d_loss * weight)}
        if (self.step + 1) % cfg.n_critic == 0:
            z_g = model.noise(len(z_d))
            D.requires_grad_(False)  # the generator's step needs no discriminator gradients
            try:
                with self._autocast():
                    scores = D(G(z_g[part], labels), labels).float()
                g_loss = gan_loss(None, scores, kind=kind, target="generator")
                losses["g"] = self._update("generator", G, self.opt_g, g_loss * weight)
            finally:
                D.requires_grad_(True)
            if self.ema is not None:
                self.ema.update(G)
        return losses

    def sample_grid(self, path: str) -> str:
        """A PNG of images generated from the fixed grid noise (one row per class when
        conditional), by the generator's moving average when one is kept."""
        n = len(self.grid_noise)
        with self.averaged():
            if self.conditional:
                labels = torch.arange(self.model.n_classes, device=self.device).repeat_interleave(
                    n // self.model.n_classes)
                images, nrow = self.model.images_from(self.grid_noise, labels), n // self.model.n_classes
            else:
                images, nrow = self.model.images_from(self.grid_noise), self.config.grid_samples
        return save_grid(path, images, self.model.levels, nrow)

    # -- loop ----------------------------------------------------------------------------------
    def _batch_sizes(self) -> set[int]:
        """The sizes of the run's global batches (each process needs a sample of every one)."""
        return epoch_batch_sizes(len(self.train_data), self.config.batch_size)

    def _epoch_batches(self) -> list[torch.Tensor]:
        """The global index batches of the current epoch."""
        return epoch_batches(len(self.train_data), self.config.batch_size, self.config.seed, self.epoch)

    def _before_step(self) -> None:
        """Called before every step (the progressive trainer sets the growth here)."""

    def _train_epoch(self) -> None:
        cfg = self.config
        from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

        batches = self._epoch_batches()
        bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not cfg.progress or self.rank != 0,
                   leave=False, desc=self._epoch_name(), dynamic_ncols=True)
        try:
            for index in batches[self.step_in_epoch:]:
                self._before_step()
                losses = self.train_step(index)
                self.step += 1
                self.step_in_epoch += 1
                for key, value in losses.items():
                    self.epoch_losses[key].append(value)
                bar.update(1)
                bar.set_postfix({f"{k}_loss": f"{v:.4f}" for k, v in losses.items()})
                if self.step % cfg.log_every == 0 and self.log:
                    self.log.write(self.step, **{f"{k}_loss": v for k, v in losses.items()})
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
        self._end_epoch()

    def _epoch_name(self) -> str:
        """The current epoch as the progress bar and the epoch's message name it."""
        return f"epoch {self.epoch + 1}/{self._epochs()}"

    def _grid_path(self) -> str:
        """Where the grid of the epoch just ended goes."""
        return os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png")

    def _end_epoch(self) -> None:
        def mean(values: list[float]) -> float | None:
            return sum(values) / len(values) if values else None

        def shown(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f}"

        self._check_weights()
        d, g = mean(self.epoch_losses["d"]), mean(self.epoch_losses["g"])
        self.history.d_loss.append(d)
        self.history.g_loss.append(g)
        message = f"{self._epoch_name()}: discriminator {shown(d)}, generator {shown(g)}"
        quality = {}
        if self.quality is not None and self.rank == 0 and (self.epoch + 1) % self.config.eval_every == 0:
            with self.averaged():
                quality, scores = self.quality(self.model)
            message += f"; {scores}"
        if self.log:
            self.log.write(self.step, epoch=self.epoch + 1, d_loss_epoch=d, g_loss_epoch=g, **quality)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = {"d": [], "g": []}
        if self.config.grid_samples and self.rank == 0:
            path = self.sample_grid(self._grid_path())
            message += f", samples {path}"
        self.save()
        if self.config.progress and self.rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(message)
