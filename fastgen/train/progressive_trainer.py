"""A trainer for ``fastgen.models.ProgressiveGAN``: the GAN trainer's step (WGAN-GP with the drift
term by default), run stage by stage as Karras et al. (2018) grow the networks.

Stage s (resolution 4 * 2**s) shows the discriminator ``fade_images`` real images while the new
block fades in (alpha rising linearly from 0 to 1; stage 0 has no fade-in) and then
``stable_images`` more at alpha 1, in batches of the stage's batch size. An "epoch" of this trainer
is one stage: its checkpoint counters (epoch = stage, step_in_epoch) fix the growth, and the
model's growth (stage, alpha) is saved with its weights. The real images come from one stream,
the concatenation of the seeded permutations of successive passes over the data, so that batches
of any size follow each other across passes, and the stream position of a step depends only on
the stage and the step: a resumed run replays exactly what it had not reached, across stage
boundaries too.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from fastgen.data import ImageDataset
from fastgen.train._validate import MAX_COUNT, check_int
from fastgen.train.gan_trainer import GANTrainConfig, GANTrainer


@dataclass
class ProgressiveTrainConfig(GANTrainConfig):
    """Hyper-parameters of a progressive run: those of ``GANTrainConfig`` (with the paper's
    defaults: Adam 1e-3, betas (0, 0.99), WGAN-GP weight 10, drift 0.001, generator EMA 0.999),
    plus the schedule.

    Attributes:
        epochs: stages to train, from 4x4 (None: all of the model's, up to its image size).
        batch_size: the batch size of every stage without an entry in ``stage_batch_sizes``.
        fade_images: real images shown while a stage's new block fades in (> 0).
        stable_images: real images shown at a stage's full weight after that (> 0).
        stage_batch_sizes: per-stage batch sizes from 4x4 on (e.g. (64, 64, 32, 16)); stages past
            its end use ``batch_size``.
    """

    epochs: int | None = None
    lr_generator: float = 1e-3
    lr_discriminator: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.99)
    gp_weight: float | None = 10.0
    drift: float = 0.001
    ema_decay: float | None = 0.999
    fade_images: int = 20_000
    stable_images: int = 20_000
    stage_batch_sizes: tuple[int, ...] | None = None

    def _check_length(self) -> None:
        check_int("epochs", self.epochs, 1, 16, none=True)
        check_int("batch_size", self.batch_size, 1, MAX_COUNT)
        check_int("fade_images", self.fade_images, 1, 2**40)
        check_int("stable_images", self.stable_images, 1, 2**40)
        if self.stage_batch_sizes is not None:
            if isinstance(self.stage_batch_sizes, (str, bytes)) or not hasattr(self.stage_batch_sizes, "__iter__"):
                raise TypeError(f"stage_batch_sizes must be a sequence of batch sizes, got {self.stage_batch_sizes!r}")
            self.stage_batch_sizes = tuple(self.stage_batch_sizes)
            if not self.stage_batch_sizes:
                raise ValueError("stage_batch_sizes must name at least one batch size (or be None)")
            for k, size in enumerate(self.stage_batch_sizes):
                check_int(f"stage_batch_sizes[{k}]", size, 1, MAX_COUNT)

    def stage_batch_size(self, stage: int) -> int:
        sizes = self.stage_batch_sizes or ()
        return sizes[stage] if stage < len(sizes) else self.batch_size

    def stage_images(self, stage: int) -> int:
        """Real images shown in ``stage`` (no fade-in at the first)."""
        return self.stable_images + (self.fade_images if stage > 0 else 0)

    def stage_steps(self, stage: int) -> int:
        return math.ceil(self.stage_images(stage) / self.stage_batch_size(stage))


def stream_indices(n: int, seed: int, start: int, count: int) -> torch.Tensor:
    """Positions ``start .. start + count - 1`` of the stream of data indices: pass p over ``n``
    images is the permutation drawn from (seed, p), as ``epoch_batches`` draws an epoch's."""
    parts, position = [], start
    while position < start + count:
        p, offset = divmod(position, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + p))
        take = min(n - offset, start + count - position)
        parts.append(order[offset:offset + take])
        position += take
    return torch.cat(parts)


class ProgressiveTrainer(GANTrainer):
    """Grow and train a ``fastgen.models.ProgressiveGAN`` on ``train_data`` (full-size images;
    each stage sees them average-pooled to its resolution), writing to ``out_dir`` like
    ``GANTrainer``, with one sample grid per stage (``samples/stage_N_RxR.png``, drawn at the
    model's full size). ``train_data`` must hold at least one image; all batches of a stage have
    its batch size (the stream wraps around the data)."""

    fixed_on_resume = ("batch_size", "seed", "fade_images", "stable_images", "stage_batch_sizes")

    def __init__(self, model, train_data: ImageDataset, out_dir: str, config: ProgressiveTrainConfig | None = None,
                 *, device: torch.device | str = "cpu", eval_data: ImageDataset | None = None):
        if not callable(getattr(model, "set_growth", None)) or not isinstance(getattr(model, "n_stages", None), int):
            raise TypeError(f"model must be a fastgen.models.ProgressiveGAN, got {type(model).__name__}")
        if config is not None and not isinstance(config, ProgressiveTrainConfig):
            raise TypeError(f"config must be a ProgressiveTrainConfig, got {type(config).__name__}")
        config = config or ProgressiveTrainConfig()
        if config.epochs is not None and config.epochs > model.n_stages:
            raise ValueError(f"epochs (stages to train) is {config.epochs}, but the model grows in {model.n_stages} "
                             f"stages (4x4 to {model.image_size[0]}x{model.image_size[0]})")
        for stage in range(1, config.epochs or model.n_stages):
            size = config.stage_batch_size(stage)
            last_alpha = (config.stage_steps(stage) - 1) * size / config.fade_images
            if last_alpha < 1.0:  # stable_images >= size always suffices
                raise ValueError(f"stable_images ({config.stable_images}) is too few for stage {stage}: at its batch "
                                 f"size {size}, the last step would see the new block faded in to alpha "
                                 f"{last_alpha:.2f} of 1; use at least {size}")
        super().__init__(model, train_data, out_dir, config, device=device, eval_data=eval_data)

    def _batch_sizes(self) -> set[int]:
        # The stream's batches are all full: one size per stage.
        return {self.config.stage_batch_size(s) for s in range(self._epochs())}

    def _epochs(self) -> int:
        return self.config.epochs or self.model.n_stages

    def _steps_per_epoch(self) -> int:
        return max(self.config.stage_steps(s) for s in range(self._epochs()))

    def _start(self, resume: bool, overwrite: bool) -> None:
        super()._start(resume, overwrite)
        if not resume:
            self.model.set_growth(0, 1.0)

    def growth_at(self, stage: int, step_in_stage: int) -> tuple[int, float]:
        """(stage, alpha) of a step: alpha is the share of the fade-in's images shown before it."""
        if stage == 0:
            return 0, 1.0
        shown = step_in_stage * self.config.stage_batch_size(stage)
        return stage, min(1.0, shown / self.config.fade_images)

    def _stream_start(self, stage: int) -> int:
        cfg = self.config
        return sum(cfg.stage_steps(s) * cfg.stage_batch_size(s) for s in range(stage))

    def _epoch_batches(self) -> list[torch.Tensor]:
        cfg, stage = self.config, self.epoch
        size, steps = cfg.stage_batch_size(stage), cfg.stage_steps(stage)
        indices = stream_indices(len(self.train_data), cfg.seed, self._stream_start(stage), size * steps)
        return list(indices.split(size))

    def _before_step(self) -> None:
        self.model.set_growth(*self.growth_at(self.epoch, self.step_in_epoch))

    def _epoch_name(self) -> str:
        r = 4 * 2 ** self.epoch
        return f"stage {self.epoch + 1}/{self._epochs()} ({r}x{r})"

    def _grid_path(self) -> str:
        r = 4 * 2 ** (self.epoch - 1)  # called after the stage ended (self.epoch counts it)
        return os.path.join(self.out_dir, "samples", f"stage_{self.epoch}_{r}x{r}.png")

    def _meta(self) -> dict:
        return {**super()._meta(), "stage": self.model.stage, "alpha": self.model.alpha}
