"""A trainer for the image-to-image GANs (``fastgen.models.Pix2Pix`` on a ``PairedDataset``,
``fastgen.models.CycleGAN`` on an ``UnpairedDataset``).

One step takes one batch of real images (a batch of pairs, or a batch of each domain), generates
their translations (``model.fakes``), updates the generators on ``model.generator_loss`` with the
discriminators frozen, then the discriminators on ``model.discriminator_loss`` against the
translations passed through an ``ImagePool`` (50 images per discriminator for CycleGAN, none for
pix2pix). Both optimisers are Adam (lr 2e-4, betas (0.5, 0.999)); the learning rate is constant
for the first ``decay_from`` of the steps and then falls linearly to zero (CycleGAN's schedule).

An epoch is ceil(max domain size / batch_size) steps; each domain's images come in the order of a
permutation drawn from (seed, epoch, domain) alone, read cyclically, so a shorter domain (or the
last batch of pairs) wraps around to its first images. Checkpoints hold the networks, both
optimisers, the global CPU RNG and the pools, so a resumed run continues exactly on the CPU (on a
GPU, pix2pix's dropout draws from the CUDA generator, which is not saved yet); ``fit`` refuses to
start afresh in a directory that holds a run, and a non-finite loss, gradient norm or weight stops
the run (TrainingDiverged) before it touches a checkpoint.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from fastgen.data import ImageDataset, PairedDataset, UnpairedDataset
from fastgen.models.cyclegan import CycleGAN
from fastgen.models.pix2pix import Pix2Pix
from fastgen.models.translation import ImageTranslator
from fastgen.train._validate import (MAX_COUNT, MAX_EPOCHS, MAX_SEED, check_betas, check_bool, check_float,
                                     check_int)
from fastgen.train.checkpoint import (CheckpointError, apply_resume, load_training_states, resume_state,
                                      rng_states, save_checkpoint)
from fastgen.train.distributed import resolve_device
from fastgen.train.grid import save_grid
from fastgen.train.image_pool import ImagePool
from fastgen.train.metrics_log import MetricsLog
from fastgen.train.run_loop import RunLoop
from fastgen.train.trainer import (MAX_GRID_SAMPLES, TrainingDiverged, diverged, float_list, resumed_config_changes, training_counters,
                                   warn_changes)



@dataclass
class TranslationTrainConfig:
    """Hyper-parameters of an image-to-image run.

    Attributes:
        epochs: passes over the larger domain (or the pairs).
        batch_size: images per domain per step (pix2pix and CycleGAN used 1; larger batches train
            faster on a CPU).
        lr: Adam's learning rate for both optimisers (finite, > 0).
        betas: Adam's betas, each in [0, 1).
        decay_from: the fraction of the steps after which the learning rate falls linearly to 0
            (0.5 in CycleGAN; 1.0 keeps it constant).
        pool_size: generated images kept per discriminator (None: 50 for CycleGAN, 0 for pix2pix;
            pix2pix takes none, since its discriminator judges a translation with its own source).
        seed: seeds the batch order and the global RNG (dropout, the pool's draws).
        checkpoint_every: also write ``last`` every this many steps (None: at epoch ends only).
        grid_samples: rows of the per-epoch grid (input | output | target); 0: no grids.
        log_every: write the step losses to metrics.jsonl every this many steps.
        progress: show a progress bar.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    decay_from: float = 0.5
    pool_size: int | None = None
    seed: int = 0
    checkpoint_every: int | None = None
    grid_samples: int = 8
    log_every: int = 50
    progress: bool = True

    def __post_init__(self):
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_COUNT)
        check_float("lr", self.lr, 0.0, low_open=True)
        self.betas = check_betas(self.betas)
        check_float("decay_from", self.decay_from, 0.0, 1.0)
        check_int("pool_size", self.pool_size, 0, MAX_COUNT, none=True)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("checkpoint_every", self.checkpoint_every, 1, MAX_COUNT, none=True)
        check_int("grid_samples", self.grid_samples, 0, MAX_GRID_SAMPLES)
        check_int("log_every", self.log_every, 1, MAX_COUNT)
        check_bool("progress", self.progress)


@dataclass
class TranslationHistory:
    """Per-epoch means of the step losses: "d", "g" and the generator loss's parts (l1, cycle, ...),
    and the validation error to the true translation where ``val_data`` was given."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    val_error: list[float] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, file: str, saved: object) -> TranslationHistory:
        if not isinstance(saved, dict) or set(saved) != {"losses", "val_error"} \
                or not isinstance(saved["losses"], dict):
            raise CheckpointError(f"{file}: \"history\" must hold losses and val_error")
        return cls({k: float_list(file, f"history.{k}", v) for k, v in saved["losses"].items()},
                   float_list(file, "val_error", saved["val_error"]))


def _domains(data: object, name: str, model: ImageTranslator) -> tuple[ImageDataset, ImageDataset]:
    """The (source, target) image sets of ``data``, checked against the model's kind and shapes."""
    if isinstance(model, Pix2Pix):
        if not isinstance(data, PairedDataset):
            raise TypeError(f"{name} must be a fastgen.data.PairedDataset for pix2pix, got {type(data).__name__}")
        domains = (data.source, data.target)
    else:
        if not isinstance(data, UnpairedDataset):
            raise TypeError(f"{name} must be a fastgen.data.UnpairedDataset for CycleGAN, got {type(data).__name__}")
        domains = (data.a, data.b)
    for domain, shape, what in zip(domains, (model.source_shape, model.target_shape), ("source", "target")):
        if len(domain) == 0:
            raise ValueError(f"{name} ({domain.name}) holds no {what} images")
        if tuple(domain.shape) != tuple(shape):
            raise ValueError(f"the model takes {what} images of shape {tuple(shape)}, {domain.name} has "
                             f"{tuple(domain.shape)}")
        if domain.levels != model.levels:
            raise ValueError(f"the model has {model.levels} levels, {domain.name} has {domain.levels}")
    return domains


def translation_error(model: ImageTranslator, data: PairedDataset | UnpairedDataset,
                      batch_size: int = 64) -> float | None:
    """The mean absolute error, on the [0, 1] scale, between the model's translations and the true
    ones: target images for pairs; ``a_in_b`` and ``b_in_a`` (both directions averaged) for an
    unpaired set that has them. None when the data holds no ground truth."""
    top = model.levels - 1
    if isinstance(data, PairedDataset):
        out = model.translate(data.source.images, batch_size=batch_size)
        return float((out - data.target.images.long()).abs().float().mean() / top)
    if data.a_in_b is None or data.b_in_a is None:
        return None
    forward = model.translate(data.a.images, batch_size=batch_size)
    backward = model.translate(data.b.images, "backward", batch_size=batch_size)
    return 0.5 * float((forward - data.a_in_b.images.long()).abs().float().mean() / top
                       + (backward - data.b_in_a.images.long()).abs().float().mean() / top)


class TranslationTrainer(RunLoop):
    """Train ``model`` (Pix2Pix or CycleGAN) on ``train_data``; files go to ``out_dir``: the
    checkpoint directory ``last``, ``metrics.jsonl`` and ``samples/epoch_NNN.png`` (rows of input |
    translation | target, from the first images of ``val_data`` or else of ``train_data``). With
    ``val_data``, the error to the true translation (``translation_error``) is logged every epoch."""

    def __init__(self, model: ImageTranslator, train_data: PairedDataset | UnpairedDataset, out_dir: str,
                 config: TranslationTrainConfig | None = None, *, device: torch.device | str = "cpu",
                 val_data: PairedDataset | UnpairedDataset | None = None):
        if not isinstance(model, (Pix2Pix, CycleGAN)):
            raise TypeError(f"model must be a fastgen.models.Pix2Pix or CycleGAN, got {type(model).__name__}")
        if config is not None and not isinstance(config, TranslationTrainConfig):
            raise TypeError(f"config must be a TranslationTrainConfig, got {type(config).__name__}")
        self.domains = _domains(train_data, "train_data", model)
        if val_data is not None:
            _domains(val_data, "val_data", model)
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise ValueError(f"out_dir must be a directory path, got {out_dir!r}")
        self.config = cfg = config or TranslationTrainConfig()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_data, self.val_data, self.out_dir = train_data, val_data, str(out_dir)
        self.paired = isinstance(train_data, PairedDataset)
        params = lambda nets: list(itertools.chain.from_iterable(n.parameters() for n in nets))  # noqa: E731
        self.opt_g = torch.optim.Adam(params(model.generators), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(params(model.discriminators), lr=cfg.lr, betas=cfg.betas)
        if self.paired and cfg.pool_size:
            raise ValueError(f"pool_size={cfg.pool_size}: pix2pix's discriminator judges each translation next to its "
                             "own source, which a pool of past translations would pair with other sources; use 0")
        pool_size = (0 if self.paired else 50) if cfg.pool_size is None else cfg.pool_size
        self.pools = [ImagePool(pool_size) for _ in range(1 if self.paired else 2)]
        self.steps_per_epoch = math.ceil(max(len(d) for d in self.domains) / cfg.batch_size)
        self.history = TranslationHistory()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: dict[str, list[float]] = {}
        self.last_path = os.path.join(self.out_dir, "last")
        self.saved_step: int | None = None
        self.log: MetricsLog | None = None

    # -- schedule and batches ------------------------------------------------------------------
    def learning_rate(self, step: int) -> float:
        """The learning rate of ``step``: ``lr`` until ``decay_from`` of all steps, then linear to 0."""
        cfg = self.config
        total = cfg.epochs * self.steps_per_epoch
        start = cfg.decay_from * total
        if step < start or total <= start:
            return cfg.lr
        return cfg.lr * max(0.0, (total - step) / (total - start))

    def batch_indices(self, epoch: int, step_in_epoch: int) -> list[torch.Tensor]:
        """Each domain's image indices for one step (one shared index for pairs)."""
        bs = self.config.batch_size
        out = []
        for k, domain in enumerate(self.domains[:1] if self.paired else self.domains):
            g = torch.Generator().manual_seed((self.config.seed * 1_000_003 + epoch) * 2 + k)
            order = torch.randperm(len(domain), generator=g)
            out.append(order[(step_in_epoch * bs + torch.arange(bs)) % len(domain)])
        return out * 2 if self.paired else out

    def reals(self, indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images in [-1, 1] on the trainer's device (checked once, here)."""
        model = self.model
        return tuple(model.to_unit(domain.images[index].to(self.device), what)
                     for domain, index, what in zip(self.domains, indices, ("source", "target")))

    # -- state ---------------------------------------------------------------------------------
    def save(self, path: str | None = None) -> None:
        """Write a checkpoint directory (default ``out_dir/last``) that ``resume`` continues exactly."""
        self._check_weights()
        save_checkpoint(
            path or self.last_path, model_type=type(self.model).__name__, model_config=self.model.config(),
            weights=self.model.state_dict(),
            training={"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), **rng_states(self.device),
                      "pools": [pool.state_dict() for pool in self.pools]},
            meta={"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                  "train_images": max(len(d) for d in self.domains), "domain_sizes": [len(d) for d in self.domains],
                  "epoch_losses": self.epoch_losses,
                  "history": asdict(self.history), "train_config": asdict(self.config)},
        )
        if path is None or path == self.last_path:
            self.saved_step = self.step

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last``) exactly where it was written; a
        changed lr, betas or decay_from applies from here on, with a warning."""
        checkpoint, training = resume_state(path or self.last_path, self.model,
                                            required=("opt_g", "opt_d", "rng", "pools"))
        file, meta = os.path.join(checkpoint.path, "config.json"), checkpoint.config
        changes = resumed_config_changes(checkpoint.path, meta.get("train_config"), self.config,
                                         fixed=("batch_size", "seed", "epochs"),
                                         noted=("lr", "betas", "decay_from"))
        epoch, step_in_epoch, step = training_counters(checkpoint, self.steps_per_epoch,
                                                       max(len(d) for d in self.domains))
        sizes = [len(d) for d in self.domains]
        if meta.get("domain_sizes", sizes) != sizes:
            raise CheckpointError(f"{checkpoint.path}: the run was trained on domains of {meta['domain_sizes']} "
                                  f"images, this data has {sizes}; resume it with its own data")
        losses = meta.get("epoch_losses")
        if not isinstance(losses, dict):
            raise CheckpointError(f"{file}: \"epoch_losses\" must map loss names to lists")
        epoch_losses = {k: float_list(file, f"epoch_losses.{k}", v) for k, v in losses.items()}
        history = TranslationHistory.from_checkpoint(file, meta.get("history"))
        load_training_states(checkpoint, training, {"opt_g": self.opt_g, "opt_d": self.opt_d},
                             "state of the two optimisers")
        pools = training["pools"]
        if not isinstance(pools, list) or len(pools) != len(self.pools):
            raise CheckpointError(f"{checkpoint.path}: the image pools do not fit this model")
        try:
            for pool, state in zip(self.pools, pools):
                pool.load_state_dict(state)
                pool.to(self.device)
        except ValueError as e:
            raise CheckpointError(f"{checkpoint.path}: {e}") from None
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:  # the new betas when they changed (lr is set every step)
                group["betas"] = self.config.betas
        apply_resume(checkpoint, training, self.model, self.device)
        self.epoch, self.step_in_epoch, self.step = epoch, step_in_epoch, step
        self.epoch_losses, self.history, self.saved_step = epoch_losses, history, step
        warn_changes(checkpoint.path, changes, step)

    # -- checks --------------------------------------------------------------------------------
    def _diverged(self, what: str, value: object) -> TrainingDiverged:
        return diverged(what, value, self.step + 1, self.epoch + 1, self.last_path, self.saved_step,
                        f"Lower the learning rate (lr={self.config.lr:g})")

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, what: str) -> float:
        value = loss.item()
        self._check_finite(f"the {what} loss", value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self._check_finite(f"the {what} gradient norm", float(torch.nn.utils.get_total_norm(grads)))
        optimizer.step()
        return value

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, indices: list[torch.Tensor]) -> dict[str, float]:
        """Update the generators, then the discriminators, on one batch; returns the losses ("g",
        "d" and the generator loss's parts)."""
        model = self.model
        lr = self.learning_rate(self.step)
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = lr
        reals = self.reals(indices)
        fakes = model.fakes(*reals)
        for net in model.discriminators:
            net.requires_grad_(False)  # the generators' step needs no discriminator gradients
        try:
            g_loss, parts = model.generator_loss(*reals, *fakes)
            losses = {"g": self._update(g_loss, self.opt_g, "generator")}
        finally:
            for net in model.discriminators:
                net.requires_grad_(True)
        pooled = [pool(fake) for pool, fake in zip(self.pools, fakes)]
        losses["d"] = self._update(model.discriminator_loss(*reals, *pooled), self.opt_d, "discriminator")
        losses.update({k: float(v) for k, v in parts.items()})
        return losses

    def sample_grid(self, path: str) -> str:
        """A PNG whose rows are input | translation | target for the first ``grid_samples`` images
        (of val_data, or train_data); for CycleGAN a second block maps B -> A. Grey images are
        shown as RGB next to RGB ones."""
        data = self.val_data if self.val_data is not None else self.train_data
        n = self.config.grid_samples
        if isinstance(data, PairedDataset):
            source = data.source.images[:n]
            blocks = [[source, self.model.translate(source), data.target.images[:n]]]
        else:
            a, b = data.a.images[:n], data.b.images[:n]
            blocks = [[a, self.model.translate(a)], [b, self.model.translate(b, "backward")]]
            if data.a_in_b is not None and data.b_in_a is not None:
                blocks[0].append(data.a_in_b.images[:n])
                blocks[1].append(data.b_in_a.images[:n])
        rgb = any(t.shape[1] == 3 for block in blocks for t in block)
        tiles = [(t[k].expand(3, -1, -1) if rgb else t[k]).long()
                 for block in blocks for k in range(len(block[0])) for t in block]
        return save_grid(path, torch.stack(tiles), self.model.levels, len(blocks[0]))

    # -- loop ----------------------------------------------------------------------------------
    def _train_epoch(self) -> None:
        cfg = self.config
        from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not cfg.progress, leave=False,
                   desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
        try:
            while self.step_in_epoch < self.steps_per_epoch:
                losses = self.train_step(self.batch_indices(self.epoch, self.step_in_epoch))
                self.step += 1
                self.step_in_epoch += 1
                for key, value in losses.items():
                    self.epoch_losses.setdefault(key, []).append(value)
                bar.update(1)
                bar.set_postfix({k: f"{losses[k]:.4f}" for k in ("d", "g")})
                if self.step % cfg.log_every == 0:
                    self.log.write(self.step, **{f"{k}_loss": v for k, v in losses.items()})
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
        finally:
            bar.close()
        self._end_epoch()

    def _end_epoch(self) -> None:
        self._check_weights()
        means = {k: sum(v) / len(v) for k, v in self.epoch_losses.items() if v}
        for key, value in means.items():
            self.history.losses.setdefault(key, []).append(value)
        message = f"epoch {self.epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
        extra = {}
        if self.val_data is not None:
            error = translation_error(self.model, self.val_data)
            if error is not None:
                self.history.val_error.append(error)
                extra["val_error"] = error
                message += f"; validation error {error:.4f}"
        self.model.train()
        self.log.write(self.step, epoch=self.epoch + 1, **{f"{k}_loss_epoch": v for k, v in means.items()}, **extra)
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = {}
        if self.config.grid_samples:
            path = self.sample_grid(os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png"))
            message += f", samples {path}"
        self.save()
        if self.config.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)

