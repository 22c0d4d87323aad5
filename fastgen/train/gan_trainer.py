"""A trainer for ``fastgen.models.GAN``: alternating discriminator (critic) and generator updates
with the model's ``gan_loss`` kind, an optional WGAN-GP gradient penalty, a progress bar with both
losses, atomic checkpoints that resume exactly, a metrics log, and a sample grid per epoch drawn
from the same latent noise every epoch, so that the grids of successive epochs are comparable.

One step takes one batch of real images: the discriminator is updated on it, and every
``n_critic``-th step the generator is updated too (WGAN and WGAN-GP use n_critic = 5). Resumption
follows ``fastgen.train.Trainer``: the batch order of an epoch depends only on (seed, epoch), and a
checkpoint holds both networks, both optimisers and the global RNG state (the latent noise).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from fastgen.data import ImageDataset
from fastgen.models._checks import check_labels
from fastgen.models.gan import GAN
from fastgen.ops import gan_loss
from fastgen.train.checkpoint import checkpoint_exists, resume_state, save_checkpoint
from fastgen.train.grid import save_grid
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.trainer import epoch_batches


@dataclass
class GANTrainConfig:
    """Hyper-parameters of a GAN run.

    Attributes:
        epochs: passes over the training set.
        batch_size: real images per step.
        lr_generator, lr_discriminator: Adam learning rates.
        betas: Adam's betas ((0.5, 0.999) as in DCGAN; WGAN-GP uses (0.0, 0.9)).
        n_critic: discriminator updates per generator update.
        gp_weight: weight of the WGAN-GP gradient penalty (None: no penalty).
        seed: seeds the batch order, the global RNG and the grid's fixed latent noise.
        checkpoint_every: also write ``last`` every this many steps (None: at epoch ends only).
        grid_samples: images per grid row (a conditional model gets one row per class; 0: no grids).
        log_every: write the step losses to metrics.jsonl every this many steps.
        progress: show a progress bar.
    """

    epochs: int = 20
    batch_size: int = 64
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1
    gp_weight: float | None = None
    seed: int = 0
    checkpoint_every: int | None = None
    grid_samples: int = 8
    log_every: int = 50
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("lr_generator", "lr_discriminator"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.gp_weight is not None and not self.gp_weight > 0:
            raise ValueError(f"gp_weight must be positive or None, got {self.gp_weight}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps or None, got {self.checkpoint_every}")
        self.betas = tuple(self.betas)


@dataclass
class GANHistory:
    """Per-epoch means of the discriminator and generator losses."""

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)


class GANTrainer:
    """Train ``model`` (a ``fastgen.models.GAN``) on ``train_data``; files go to ``out_dir``: the
    checkpoint directory ``last``, ``metrics.jsonl`` and ``samples/epoch_NNN.png``. A
    class-conditional model gets the batch's labels, for both networks."""

    def __init__(self, model: GAN, train_data: ImageDataset, out_dir: str, config: GANTrainConfig | None = None, *,
                 device: torch.device | str = "cpu"):
        if not isinstance(model, GAN):
            raise TypeError(f"model must be a fastgen.models.GAN (DCGAN, MLPGAN), got {type(model).__name__}")
        self.config = config or GANTrainConfig()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_data, self.out_dir = train_data, out_dir
        self.conditional = model.n_classes is not None
        if self.conditional and train_data.labels is None:
            raise ValueError(f"the model is class-conditional but {train_data.name} has no labels")
        cfg = self.config
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr_generator, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr_discriminator, betas=cfg.betas)
        self.history = GANHistory()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: dict[str, list[float]] = {"d": [], "g": []}
        self.last_path = os.path.join(out_dir, "last")
        # The grid's latents: drawn once from the seed, the same for every epoch and after a resume.
        self.grid_noise = model.noise(max(1, cfg.grid_samples) * (model.n_classes or max(1, cfg.grid_samples)),
                                      torch.Generator(self.device).manual_seed(cfg.seed))
        self.log: MetricsLog | None = None

    # -- state ---------------------------------------------------------------------------------
    def save(self, path: str | None = None) -> None:
        """Write a checkpoint directory (default ``out_dir/last``) that ``resume`` continues exactly."""
        save_checkpoint(
            path or self.last_path, model_type=type(self.model).__name__, model_config=self.model.config(),
            weights=self.model.state_dict(),
            training={"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": torch.get_rng_state()},
            meta={"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                  "epoch_losses": self.epoch_losses, "history": asdict(self.history),
                  "train_config": asdict(self.config)},
        )

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last``) exactly where it was written."""
        checkpoint, training = resume_state(path or self.last_path, self.model)
        meta = checkpoint.config
        self.opt_g.load_state_dict(training["opt_g"])
        self.opt_d.load_state_dict(training["opt_d"])
        self.epoch, self.step_in_epoch, self.step = meta["epoch"], meta["step_in_epoch"], meta["step"]
        self.epoch_losses = {k: list(v) for k, v in meta["epoch_losses"].items()}
        self.history = GANHistory(**meta["history"])

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, index: torch.Tensor) -> dict[str, float]:
        """Update the discriminator on one batch, and the generator every ``n_critic`` steps;
        returns the losses ("g" only when the generator was updated)."""
        cfg, model, kind = self.config, self.model, self.model.loss_kind
        real = model.to_unit(self.train_data.images[index].to(self.device))
        labels = self.train_data.labels[index].to(self.device) if self.conditional else None
        # Checked once here; the networks are then called directly, not through generate/discriminate.
        labels = check_labels(labels, len(index), model.n_classes)
        G, D = model.generator, model.discriminator
        with torch.no_grad():
            fake = G(model.noise(len(index)), labels)
        d_loss = gan_loss(D(real, labels), D(fake, labels), kind=kind)
        if cfg.gp_weight is not None:
            d_loss = d_loss + model.gradient_penalty(real, fake, labels, weight=cfg.gp_weight)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        losses = {"d": d_loss.item()}
        if (self.step + 1) % cfg.n_critic == 0:
            D.requires_grad_(False)  # the generator's step needs no discriminator gradients
            try:
                g_loss = gan_loss(None, D(G(model.noise(len(index)), labels), labels), kind=kind, target="generator")
                self.opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                self.opt_g.step()
            finally:
                D.requires_grad_(True)
            losses["g"] = g_loss.item()
        return losses

    def sample_grid(self, path: str) -> str:
        """A PNG of images generated from the fixed grid noise (one row per class when conditional)."""
        n = len(self.grid_noise)
        if self.conditional:
            labels = torch.arange(self.model.n_classes, device=self.device).repeat_interleave(n // self.model.n_classes)
            images, nrow = self.model.images_from(self.grid_noise, labels), n // self.model.n_classes
        else:
            images, nrow = self.model.images_from(self.grid_noise), self.config.grid_samples
        return save_grid(path, images, self.model.levels, nrow)

    # -- loop ----------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> GANHistory:
        """Train until ``config.epochs``; with ``resume`` continue from ``out_dir/last`` when it exists."""
        cfg = self.config
        if resume and checkpoint_exists(self.last_path):
            self.resume()
        elif self.step == 0:
            torch.manual_seed(cfg.seed)
        self.log = MetricsLog(self.out_dir)
        self.model.train()
        from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

        while self.epoch < cfg.epochs:
            batches = epoch_batches(len(self.train_data), cfg.batch_size, cfg.seed, self.epoch)
            bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not cfg.progress, leave=False,
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
            for index in batches[self.step_in_epoch:]:
                losses = self.train_step(index)
                self.step += 1
                self.step_in_epoch += 1
                for key, value in losses.items():
                    self.epoch_losses[key].append(value)
                bar.update(1)
                bar.set_postfix({f"{k}_loss": f"{v:.4f}" for k, v in losses.items()})
                if self.step % cfg.log_every == 0:
                    self.log.write(self.step, **{f"{k}_loss": v for k, v in losses.items()})
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            self._end_epoch()
        self.log.close()
        return self.history

    def _end_epoch(self) -> None:
        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")

        d, g = mean(self.epoch_losses["d"]), mean(self.epoch_losses["g"])
        self.history.d_loss.append(d)
        self.history.g_loss.append(g)
        self.log.write(self.step, epoch=self.epoch + 1, d_loss_epoch=d, g_loss_epoch=g)
        message = f"epoch {self.epoch + 1}: discriminator {d:.4f}, generator {g:.4f}"
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = {"d": [], "g": []}
        if self.config.grid_samples:
            path = self.sample_grid(os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png"))
            message += f", samples {path}"
        self.save()
        if self.config.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)
