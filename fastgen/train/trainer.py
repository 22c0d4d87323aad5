"""A trainer for any fastgen model that exposes ``loss(x, cond)`` (mean negative log-likelihood
in nats per sub-pixel): Adam, gradient clipping, a progress bar with loss and bits/dim,
validation each epoch keeping the best checkpoint, atomic checkpoints that resume exactly, and a
sample grid per epoch.

Exact resumption: the batch order of epoch e is a permutation drawn from a generator seeded
with (seed, e), so a run restarted from a checkpoint at step s of epoch e replays the same
batches from s on; the checkpoint holds the weights, the optimiser and scheduler state, and the
global RNG state (dropout and anything else drawing from it).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch

from fastgen.data import ImageDataset
from fastgen.train.checkpoint import load_checkpoint, save_checkpoint
from fastgen.train.grid import save_grid

LN2 = math.log(2.0)


@dataclass
class TrainConfig:
    """Hyper-parameters of a run.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam learning rate; multiplied by ``lr_decay`` after every epoch.
        grad_clip: maximum gradient norm (None: no clipping).
        seed: seeds the batch order and the global RNG.
        checkpoint_every: also write ``last.pt`` every this many steps (None: at epoch ends only).
        grid_samples: images in the per-epoch sample grid (0: none); a conditional model draws
            this many per class, one row per class.
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
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps or None, got {self.checkpoint_every}")


@dataclass
class History:
    train_bpd: list[float] = field(default_factory=list)
    val_bpd: list[float] = field(default_factory=list)
    best_val_bpd: float = math.inf
    best_epoch: int = -1


class Trainer:
    """Train ``model`` on ``train_data``, validating on ``val_data``; files go to ``out_dir``:
    ``last.pt`` (resume point), ``best.pt`` (lowest validation bits/dim) and
    ``samples/epoch_NNN.png``. A class-conditional model (``model.n_classes``) gets the labels
    as ``cond``."""

    def __init__(self, model: torch.nn.Module, train_data: ImageDataset, val_data: ImageDataset | None,
                 out_dir: str, config: TrainConfig | None = None, *, device: torch.device | str = "cpu"):
        self.config = config or TrainConfig()
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_data, self.val_data, self.out_dir = train_data, val_data, out_dir
        self.conditional = getattr(model, "n_classes", None) is not None
        if self.conditional and train_data.labels is None:
            raise ValueError(f"the model is class-conditional but {train_data.name} has no labels")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=self.config.lr_decay)
        self.history = History()
        self.epoch = self.step_in_epoch = self.step = 0
        self.epoch_losses: list[float] = []  # this epoch's step losses so far (the epoch's mean)
        self.last_path = os.path.join(out_dir, "last.pt")
        self.best_path = os.path.join(out_dir, "best.pt")

    # -- state ---------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "model_type": type(self.model).__name__,
            "model_config": self.model.config() if hasattr(self.model, "config") else {},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "epoch_losses": list(self.epoch_losses),
            "history": asdict(self.history),
            "train_config": asdict(self.config),
        }

    def save(self, path: str | None = None) -> None:
        save_checkpoint(path or self.last_path, self._state())

    def resume(self, path: str | None = None) -> None:
        """Continue from a checkpoint (default ``out_dir/last.pt``) exactly where it was written."""
        state = load_checkpoint(path or self.last_path)
        if state["model_type"] != type(self.model).__name__:
            raise ValueError(f"{path or self.last_path}: holds a {state['model_type']}, not a "
                             f"{type(self.model).__name__}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.step_in_epoch, self.step = state["epoch"], state["step_in_epoch"], state["step"]
        self.epoch_losses = list(state["epoch_losses"])
        self.history = History(**state["history"])

    # -- loop ----------------------------------------------------------------------------------
    def _batches(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train_data), generator=g)
        return list(order.split(self.config.batch_size))

    def _loss(self, data: ImageDataset, index: torch.Tensor) -> torch.Tensor:
        x = data.images[index].to(self.device, torch.long)
        cond = data.labels[index].to(self.device) if self.conditional else None
        return self.model.loss(x, cond)

    @torch.no_grad()
    def evaluate(self, data: ImageDataset, batch_size: int = 256) -> float:
        """Mean bits/dim of the model on ``data``."""
        was_training = self.model.training
        self.model.eval()
        total = 0.0
        for index in torch.arange(len(data)).split(batch_size):
            total += self._loss(data, index).item() * len(index)
        self.model.train(was_training)
        return total / len(data) / LN2

    def sample_grid(self, path: str, per_class: int | None = None) -> str:
        """Sample (one row per class for a conditional model) with a fixed seed; write a PNG."""
        per_class = per_class or self.config.grid_samples
        g = torch.Generator().manual_seed(self.config.seed)
        if self.conditional:
            labels = torch.arange(self.model.n_classes).repeat_interleave(per_class).to(self.device)
            images = self.model.sample(len(labels), labels, generator=g)
            nrow = per_class
        else:
            images = self.model.sample(per_class * per_class, generator=g)
            nrow = per_class
        return save_grid(path, images, self.model.levels, nrow)

    def fit(self, *, resume: bool = False) -> History:
        """Train until ``config.epochs``; with ``resume`` continue from ``out_dir/last.pt`` when it exists."""
        cfg = self.config
        if resume and os.path.exists(self.last_path):
            self.resume()
        elif self.step == 0:
            torch.manual_seed(cfg.seed)
        self.model.train()
        while self.epoch < cfg.epochs:
            batches = self._batches(self.epoch)
            from tqdm.auto import tqdm  # imported here: `import fastgen` needs only torch and numpy

            bar = tqdm(total=len(batches), initial=self.step_in_epoch, disable=not cfg.progress, leave=False,
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", dynamic_ncols=True)
            for index in batches[self.step_in_epoch:]:
                loss = self._loss(self.train_data, index)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.step += 1
                self.step_in_epoch += 1
                self.epoch_losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", bpd=f"{loss.item() / LN2:.3f}")
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            self._end_epoch(sum(self.epoch_losses) / max(1, len(self.epoch_losses)) / LN2)
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
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_losses = []
        self.scheduler.step()
        if h.best_epoch == self.epoch - 1:
            self.save(self.best_path)
        if self.config.grid_samples:
            path = self.sample_grid(os.path.join(self.out_dir, "samples", f"epoch_{self.epoch:03d}.png"))
            message += f", samples {path}"
        self.save()
        if self.config.progress:
            from tqdm.auto import tqdm

            tqdm.write(message)
