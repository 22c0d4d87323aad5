"""The progressive GAN trainer: the stream of real images, the fade-in schedule, one grid per
stage, checkpoints that record the growth, exact resume (mid-stage and across a stage boundary)
and its refusals."""
from __future__ import annotations

import json

import pytest
import torch

from fastgen.data import digits
from fastgen.models import MLPGAN, ProgressiveGAN
from fastgen.train import ProgressiveTrainConfig, ProgressiveTrainer
from fastgen.train.progressive_trainer import stream_indices

DATA = digits("train").subset(slice(0, 96))  # 8x8: two stages, 4x4 and 8x8


def _trainer(tmp_path, **config) -> ProgressiveTrainer:
    torch.manual_seed(0)
    model = ProgressiveGAN(1, 17, 8, latent_dim=8, max_channels=8, n_classes=10)
    cfg = ProgressiveTrainConfig(**{"batch_size": 16, "fade_images": 48, "stable_images": 32,
                                    "stage_batch_sizes": (32,), "progress": False, "grid_samples": 2, **config})
    return ProgressiveTrainer(model, DATA, str(tmp_path), cfg)


def test_stream_is_the_seeded_passes_end_to_end():
    passes = [torch.randperm(10, generator=torch.Generator().manual_seed(3 * 1_000_003 + p)) for p in range(3)]
    whole = torch.cat(passes)
    for start, count in ((0, 10), (4, 3), (7, 9), (9, 21)):
        assert torch.equal(stream_indices(10, 3, start, count), whole[start:start + count])


def test_fade_in_schedule(tmp_path):
    trainer = _trainer(tmp_path)
    cfg = trainer.config
    assert [cfg.stage_batch_size(s) for s in (0, 1)] == [32, 16]
    assert [cfg.stage_steps(s) for s in (0, 1)] == [1, 5]  # 32 images at 4x4; 48 + 32 at 8x8
    assert trainer.growth_at(0, 0) == (0, 1.0)
    assert [trainer.growth_at(1, k)[1] for k in range(5)] == [0.0, 16 / 48, 32 / 48, 1.0, 1.0]
    seen = []
    trainer.train_step = lambda index, step=trainer.train_step: (seen.append((trainer.model.stage,
                                                                              trainer.model.alpha, len(index))),
                                                                 step(index))[1]
    trainer.fit()
    assert seen == [(0, 1.0, 32), (1, 0.0, 16), (1, 16 / 48, 16), (1, 32 / 48, 16), (1, 1.0, 16), (1, 1.0, 16)]
    # The stream continues across the stage boundary: stage 1 starts at position 32.
    batches = trainer._epoch_batches()  # epoch is 2 now: the batches stage 2 would have
    assert len(batches) == 5 and torch.equal(batches[0], stream_indices(96, 0, 112, 16))


def test_one_grid_per_stage_and_the_growth_in_checkpoints(tmp_path):
    trainer = _trainer(tmp_path)
    history = trainer.fit()
    assert len(history.d_loss) == 2
    assert (tmp_path / "samples" / "stage_1_4x4.png").exists() and (tmp_path / "samples" / "stage_2_8x8.png").exists()
    meta = json.loads((tmp_path / "last" / "config.json").read_text())
    assert meta["stage"] == 1 and meta["alpha"] == 1.0 and meta["epoch"] == 2
    import fastgen

    loaded = fastgen.load(str(tmp_path / "last"))
    assert (loaded.stage, loaded.alpha) == (1, 1.0)
    assert loaded.sample(3, torch.tensor([1, 2, 3])).shape == (3, 1, 8, 8)


class Crash(Exception):
    pass


def _crash_after(trainer: ProgressiveTrainer, steps: int) -> None:
    original = trainer.train_step

    def step(index):
        if trainer.step == steps:
            raise Crash
        return original(index)

    trainer.train_step = step


@pytest.mark.parametrize("crash_at", [2, 1])  # mid-fade-in (checkpoint at step 2), and the stage boundary
def test_resume_is_exact_mid_stage_and_across_the_boundary(tmp_path, crash_at):
    straight = _trainer(tmp_path / "a", checkpoint_every=1)
    straight.fit()
    crashed = _trainer(tmp_path / "b", checkpoint_every=1)
    _crash_after(crashed, crash_at)
    with pytest.raises(Crash):
        crashed.fit()
    resumed = _trainer(tmp_path / "b", checkpoint_every=1)
    resumed.fit(resume=True)
    assert resumed.step == straight.step == 6
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    for k, v in straight.ema.average.items():
        assert torch.equal(resumed.ema.average[k], v), k
    assert resumed.history.d_loss == straight.history.d_loss


def test_stopping_after_a_stage_then_growing_on_is_exact(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit()
    first = _trainer(tmp_path / "b", epochs=1)
    first.fit()
    assert (first.model.stage, first.epoch) == (0, 1)
    grown = _trainer(tmp_path / "b")
    grown.fit(resume=True)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(grown.model.state_dict()[k], v), k


@pytest.mark.parametrize("config, error, match", [
    ({"fade_images": 0}, ValueError, "fade_images"),
    ({"stable_images": 0}, ValueError, "stable_images"),
    ({"stage_batch_sizes": (32, 0)}, ValueError, r"stage_batch_sizes\[1\]"),
    ({"stage_batch_sizes": ()}, ValueError, "stage_batch_sizes"),
    ({"stage_batch_sizes": "32"}, TypeError, "stage_batch_sizes"),
    ({"epochs": 0}, ValueError, "epochs"),
])
def test_schedule_is_checked(config, error, match):
    with pytest.raises(error, match=match):
        ProgressiveTrainConfig(**config)


def test_trainer_refuses_what_it_cannot_grow(tmp_path):
    with pytest.raises(ValueError, match="grows in 2 stages"):
        _trainer(tmp_path, epochs=3)
    with pytest.raises(TypeError, match="ProgressiveGAN"):
        ProgressiveTrainer(MLPGAN(1, 17, 8), DATA, str(tmp_path))
    # alpha would be 0.80 at the last of the 8x8 stage's 4 steps (fade 60, stable 4, batch 16)
    with pytest.raises(ValueError, match=r"stable_images \(4\) is too few for stage 1: .* alpha 0.80 of 1; use at "
                                         r"least 16"):
        _trainer(tmp_path, fade_images=60, stable_images=4)
    _trainer(tmp_path, fade_images=64, stable_images=8)  # 5 steps: the last at alpha 1
    with pytest.raises(ValueError, match="resume continues it exactly"):
        _trainer(tmp_path / "c", epochs=1).fit()
        _trainer(tmp_path / "c", fade_images=64).fit(resume=True)
