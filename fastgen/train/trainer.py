"""A trainer for any fastgen model that exposes ``loss(x, cond)`` (mean negative log-likelihood
in nats per sub-pixel): Adam, gradient clipping, an optional exponential moving average of the
weights, a progress bar with loss and bits/dim, validation each epoch keeping the best
checkpoint, atomic checkpoints that resume exactly, a metrics log and a sample grid per epoch.

Exact resumption: the batch order of epoch e is a permutation drawn from a generator seeded
with (seed, e), so a run restarted from a checkpoint at step s of epoch e replays the same
batches from s on; the checkpoint holds the weights, the optimiser and scheduler state, and the
global RNG state (dropout and anything else drawing from it).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from fastgen.data import ImageDataset
from fastgen.train.checkpoint import checkpoint_exists, resume_state, save_checkpoint
from fastgen.train.distributed import LossModule, rank_and_world, shard
from fastgen.train.ema import EMA
from fastgen.train.evaluate import bits_per_dim_on
from fastgen.train.grid import save_grid
from fastgen.train.metrics_log import MetricsLog

LN2 = math.log(2.0)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation of range(n) drawn from (seed, epoch) alone, so
    that a resumed run replays the batches it had not reached."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return list(torch.randperm(n, generator=g).split(batch_size))


@dataclass
class TrainConfig:
    """Hyper-parameters of a run.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam learning rate; multiplied by ``lr_decay`` after every epoch.
        grad_clip: maximum gradient norm (None: no clipping).
        seed: seeds the batch order and the global RNG.
        checkpoint_every: also write ``last`` every this many steps (None: at epoch ends only).
        grid_samples: images in the per-epoch sample grid (0: none); a conditional model draws
            this many per class, one row per class.
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.999)
            and use it for validation, the best checkpoint and sample grids (None: off).
        amp: compute the training loss under bfloat16 autocast (weights, gradients, optimiser
            and the loss's accumulation stay float32; validation runs in float32).
        log_every: write the step loss to metrics.jsonl every this many steps.
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
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps or None, got {self.checkpoint_every}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be a positive number of steps, got {self.log_every}")


@dataclass
class History:
    train_bpd: list[float] = field(default_factory=list)
    val_bpd: list[float] = field(default_factory=list)
    best_val_bpd: float = math.inf
    best_epoch: int = -1


class Trainer:
    """Train ``model`` on ``train_data``, validating on ``val_data``; files go to ``out_dir``:
    the checkpoint directories ``last`` (resume point) and ``best`` (lowest validation bits/dim),
    ``metrics.jsonl`` and ``samples/epoch_NNN.png``. A class-conditional model
    (``model.n_classes``) gets the labels as ``cond``.

    In a process group (``torchrun``, see ``fastgen.train.distributed``) every process takes its
    shard of each global batch of ``batch_size`` images, DistributedDataParallel averages the
    gradients, and only rank 0 writes checkpoints, logs and grids."""

    def __init__(self, model: torch.nn.Module, train_data: ImageDataset, val_data: ImageDataset | None,
                 out_dir: str, config: TrainConfig | None = None, *, device: torch.device | str = "cpu"):
        self.config = config or TrainConfig()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_data, self.val_data, self.out_dir = train_data, val_data, out_dir
        self.conditional = getattr(model, "n_classes", None) is not None
        if self.conditional and train_data.labels is None:
            raise ValueError(f"the model is class-conditional but {train_data.name} has no labels")
        self.rank, self.world = rank_and_world()
        self.step_module: torch.nn.Module = LossModule(self.model)
        if self.world > 1:
            # static_graph: the same parameters take part in every step, and some never do (the
            # last Gated layer's horizontal output feeds nothing); DDP then skips them cheaply.
            self.step_module = torch.nn.parallel.DistributedDataParallel(self.step_module, static_graph=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=self.config.lr_decay)
        self.ema = EMA(self.model, self.config.ema_decay) if self.config.ema_decay else None
        self.history = History()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: list[float] = []  # this epoch's step losses so far (the epoch's mean)
        self.last_path = os.path.join(out_dir, "last")
        self.best_path = os.path.join(out_dir, "best")
        self.log: MetricsLog | None = None

    # -- state ---------------------------------------------------------------------------------
    def save(self, path: str | None = None) -> None:
        """Write a checkpoint directory (default ``out_dir/last``) that ``resume`` continues exactly
        (rank 0 only)."""
        if self.rank != 0:
            return
        save_checkpoint(
            path or self.last_path, model_type=type(self.model).__name__,
            model_config=self.model.config() if hasattr(self.model, "config") else {},
            weights=self.model.state_dict(), ema_weights=self.ema.state_dict() if self.ema else None,
            training={"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                      "rng": torch.get_rng_state()},
            meta={"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
                  "epoch_losses": list(self.epoch_losses), "history": asdict(self.history),
                  "train_config": asdict(self.config)},
        )

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last``) exactly where it was written."""
        checkpoint, training = resume_state(path or self.last_path, self.model)
        meta = checkpoint.config
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint.ema_weights if checkpoint.ema_weights is not None
                                     else self.model.state_dict())
        self.optimizer.load_state_dict(training["optimizer"])
        self.scheduler.load_state_dict(training["scheduler"])
        self.epoch, self.step_in_epoch, self.step = meta["epoch"], meta["step_in_epoch"], meta["step"]
        self.epoch_losses = list(meta["epoch_losses"])
        self.history = History(**meta["history"])

    def averaged(self) -> contextlib.AbstractContextManager:
        """A block in which the model holds its EMA weights (its own weights without EMA)."""
        return self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(self.model)

    # -- loop ----------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[torch.Tensor]:
        return epoch_batches(len(self.train_data), self.config.batch_size, self.config.seed, epoch)

    def _loss(self, data: ImageDataset, index: torch.Tensor) -> torch.Tensor:
        """The training loss of a global batch: this process's shard, weighted so that the mean
        over processes that DistributedDataParallel takes is the mean over the whole batch."""
        part = shard(index, self.rank, self.world)
        x = data.images[part].to(self.device, torch.long)
        cond = data.labels[part].to(self.device) if self.conditional else None
        return self.step_module(x, cond) * (len(part) * self.world / len(index))

    def _global_mean(self, loss: torch.Tensor) -> float:
        """The batch loss over all processes (each holds its weighted shard loss)."""
        if self.world > 1:
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world
        return loss.item()

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

    def fit(self, *, resume: bool = False) -> History:
        """Train until ``config.epochs``; with ``resume`` continue from ``out_dir/last`` when it exists."""
        cfg = self.config
        if resume and checkpoint_exists(self.last_path):
            self.resume()
        elif self.step == 0:
            torch.manual_seed(cfg.seed)
        self.log = MetricsLog(self.out_dir) if self.rank == 0 else None
        self.model.train()
        while self.epoch < cfg.epochs:
            batches = self._batches(self.epoch)
            from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

            bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not cfg.progress or self.rank != 0,
                       leave=False, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
            for index in batches[self.step_in_epoch:]:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    loss = self._loss(self.train_data, index)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.step += 1
                self.step_in_epoch += 1
                value = self._global_mean(loss)
                self.epoch_losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", bpd=f"{value / LN2:.3f}")
                if self.step % cfg.log_every == 0 and self.log:
                    self.log.write(self.step, loss=value, bpd=value / LN2)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            self._end_epoch(sum(self.epoch_losses) / max(1, len(self.epoch_losses)) / LN2)
        if self.log:
            self.log.close()
        return self.history

    def _end_epoch(self, train_bpd: float) -> None:
        h = self.history
        h.train_bpd.append(train_bpd)
        message = f"epoch {self.epoch + 1}: train {train_bpd:.4f} bits/dim"
        if self.val_data is not None:
            val = self.evaluate(self.val_data)
            h.val_bpd.append(val)
            message += f", val {val:.4f} bits/dim"
            if val < h.best_val_bpd:
                h.best_val_bpd, h.best_epoch = val, self.epoch
                message += " (best)"
        if self.log:
            self.log.write(self.step, epoch=self.epoch + 1, train_bpd=train_bpd,
                           val_bpd=h.val_bpd[-1] if self.val_data is not None else None,
                           lr=self.optimizer.param_groups[0]["lr"])
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
