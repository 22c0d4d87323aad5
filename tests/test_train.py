"""Trainer: determinism, exact resumption (epoch ends and mid-epoch), best checkpoint, grids,
atomic checkpoints."""
from __future__ import annotations

import os

import pytest
import torch

from fastgen.data import ImageDataset
from fastgen.models import GatedPixelCNN, PixelCNN
from fastgen.train import TrainConfig, Trainer, load_checkpoint, model_from_checkpoint, save_checkpoint

# Optional dependencies of fastgen's data, training and demo (installed by `make test`).
pytest.importorskip("tqdm")
pytest.importorskip("PIL")


def tiny_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(torch.randint(0, 4, (n, 1, 4, 5), generator=g, dtype=torch.uint8),
                        torch.randint(0, 3, (n,), generator=g), 4, ["a", "b", "c"])


def tiny_model(dropout=0.2):
    torch.manual_seed(123)
    return GatedPixelCNN(1, 4, (4, 5), hidden_channels=8, n_layers=2, kernel_size=3, n_classes=3, dropout=dropout)


def config(**kw):
    return TrainConfig(**({"epochs": 2, "batch_size": 5, "lr": 3e-3, "grid_samples": 2, "progress": False} | kw))


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def run(out, **kw):
    trainer = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(out), config(**kw))
    trainer.fit()
    return trainer


def test_same_seed_same_run(tmp_path):
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert torch.equal(params(a.model), params(b.model)) and a.history == b.history
    c = run(tmp_path / "c", seed=1)
    assert not torch.equal(params(a.model), params(c.model))


def test_resume_at_an_epoch_end_is_exact(tmp_path):
    whole = run(tmp_path / "whole", epochs=3)
    first = run(tmp_path / "split", epochs=1)
    resumed = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path / "split"), config(epochs=3))
    resumed.fit(resume=True)
    assert first.epoch == 1 and resumed.epoch == 3
    assert torch.equal(params(whole.model), params(resumed.model))
    assert whole.history == resumed.history


class Interrupt(Exception):
    pass


def test_resume_after_a_crash_mid_epoch_is_exact(tmp_path):
    whole = run(tmp_path / "whole", checkpoint_every=1)

    class Crashing(Trainer):
        def _loss(self, data, index):
            if self.step == 7:  # the 3rd step of epoch 2 (5 steps per epoch)
                raise Interrupt
            return super()._loss(data, index)

    crashing = Crashing(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path / "crash"),
                        config(checkpoint_every=1))
    with pytest.raises(Interrupt):
        crashing.fit()
    state = load_checkpoint(str(tmp_path / "crash" / "last.pt"))
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (1, 2, 7)
    resumed = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path / "crash"),
                      config(checkpoint_every=1))
    resumed.fit(resume=True)
    assert torch.equal(params(whole.model), params(resumed.model))
    torch.testing.assert_close(whole.history.train_bpd, resumed.history.train_bpd, rtol=0, atol=0)


def test_best_checkpoint_grids_and_reload(tmp_path):
    trainer = run(tmp_path, epochs=3)
    h = trainer.history
    assert len(h.val_bpd) == 3 and h.best_val_bpd == min(h.val_bpd)
    best = load_checkpoint(str(tmp_path / "best.pt"))
    assert best["epoch"] == h.best_epoch + 1
    for epoch in (1, 2, 3):
        assert os.path.getsize(tmp_path / "samples" / f"epoch_{epoch:03d}.png") > 0
    from PIL import Image

    grid = Image.open(tmp_path / "samples" / "epoch_003.png")
    assert grid.size == (2 * (5 * 4 + 1) + 1, 3 * (4 * 4 + 1) + 1)  # 2 per class, 3 classes, 4x scale
    model = model_from_checkpoint(str(tmp_path / "last.pt"))
    assert torch.equal(params(model), params(trainer.model))
    assert trainer.evaluate(tiny_data(8, seed=1)) == pytest.approx(h.val_bpd[-1])


def test_checkpoint_writes_are_atomic(tmp_path):
    path = str(tmp_path / "ck.pt")
    save_checkpoint(path, {"model": {}, "model_type": "PixelCNN", "step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"model": {}, "model_type": "PixelCNN", "bad": Boom()})
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    run(tmp_path, epochs=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt: not a readable fastgen checkpoint"):
        load_checkpoint(str(tmp_path / "cut.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt: not a fastgen checkpoint"):
        load_checkpoint(str(tmp_path / "foreign.pt"))
    with pytest.raises(ValueError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "none.pt"))


def test_unconditional_model_and_bad_config(tmp_path):
    torch.manual_seed(0)
    model = PixelCNN(1, 4, (4, 5), hidden_channels=8, n_layers=1)
    trainer = Trainer(model, tiny_data(), None, str(tmp_path), config(epochs=1, grid_samples=2))
    trainer.fit()
    assert trainer.history.val_bpd == [] and os.path.exists(tmp_path / "samples" / "epoch_001.png")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    unlabelled = ImageDataset(tiny_data().images, None, 4)
    with pytest.raises(ValueError, match="class-conditional but images has no labels"):
        Trainer(tiny_model(), unlabelled, None, str(tmp_path))
