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
pytest.importorskip("safetensors")


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
    state = load_checkpoint(str(tmp_path / "crash" / "last")).config
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
    best = load_checkpoint(str(tmp_path / "best")).config
    assert best["epoch"] == h.best_epoch + 1
    for epoch in (1, 2, 3):
        assert os.path.getsize(tmp_path / "samples" / f"epoch_{epoch:03d}.png") > 0
    from PIL import Image

    grid = Image.open(tmp_path / "samples" / "epoch_003.png")
    assert grid.size == (2 * (5 * 4 + 1) + 1, 3 * (4 * 4 + 1) + 1)  # 2 per class, 3 classes, 4x scale
    model = model_from_checkpoint(str(tmp_path / "last"))
    assert torch.equal(params(model), params(trainer.model))
    assert trainer.evaluate(tiny_data(8, seed=1)) == pytest.approx(h.val_bpd[-1])


def save_tiny(path, **kw):
    model = tiny_model()
    save_checkpoint(str(path), model_type="GatedPixelCNN", model_config=model.config(), weights=model.state_dict(),
                    **kw)
    return model


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "ck"
    save_tiny(path, meta={"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_tiny(path, meta={"step": 2}, training={"bad": Boom()})
    assert load_checkpoint(str(path)).config["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temporary directory left behind
    save_tiny(path, meta={"step": 3})
    assert load_checkpoint(str(path)).config["step"] == 3 and sorted(os.listdir(tmp_path)) == ["ck"]


def test_an_interrupted_replacement_leaves_the_old_checkpoint(tmp_path):
    model = save_tiny(tmp_path / "last", meta={"step": 4})
    os.rename(tmp_path / "last", tmp_path / "last.old")  # the crash came between the two renames
    assert load_checkpoint(str(tmp_path / "last")).config["step"] == 4
    assert torch.equal(params(model_from_checkpoint(str(tmp_path))), params(model))  # a run directory works too
    save_tiny(tmp_path / "last", meta={"step": 5})
    assert sorted(os.listdir(tmp_path)) == ["last"]


def test_checkpoint_files_are_portable_and_safe(tmp_path):
    trainer = run(tmp_path, epochs=1)
    files = sorted(os.listdir(tmp_path / "last"))
    assert files == ["config.json", "model.safetensors", "training.pt"]
    import json

    saved = json.loads((tmp_path / "last" / "config.json").read_text())
    assert saved["format"] == "fastgen-checkpoint" and saved["model_type"] == "GatedPixelCNN"
    assert type(trainer.model)(**saved["model_config"]).config() == trainer.model.config()
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "last" / "model.safetensors")) == set(trainer.model.state_dict())


def test_weights_of_a_distributed_model_load(tmp_path):
    model = tiny_model()
    weights = {f"module.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(str(tmp_path / "ddp"), model_type="GatedPixelCNN", model_config=model.config(), weights=weights)
    assert torch.equal(params(model_from_checkpoint(str(tmp_path / "ddp"))), params(model))
    import fastgen

    assert torch.equal(params(fastgen.load(str(tmp_path / "ddp"))), params(model))


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    run(tmp_path / "run", epochs=1)
    import shutil

    shutil.copytree(tmp_path / "run" / "last", tmp_path / "cut")
    weights = tmp_path / "cut" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors: not readable safetensors weights"):
        model_from_checkpoint(str(tmp_path / "cut"))
    shutil.copytree(tmp_path / "run" / "last", tmp_path / "foreign")
    (tmp_path / "foreign" / "config.json").write_text('{"weights": 1}')
    with pytest.raises(ValueError, match="config.json: not a fastgen checkpoint"):
        load_checkpoint(str(tmp_path / "foreign"))
    (tmp_path / "foreign" / "config.json").write_text('{"format": "fastgen-che')
    with pytest.raises(ValueError, match="config.json: not a readable checkpoint config"):
        load_checkpoint(str(tmp_path / "foreign"))
    shutil.copytree(tmp_path / "run" / "last", tmp_path / "other")
    text = (tmp_path / "other" / "config.json").read_text().replace('"hidden_channels": 8', '"hidden_channels": 16')
    (tmp_path / "other" / "config.json").write_text(text)
    with pytest.raises(ValueError, match="the weights do not fit a GatedPixelCNN of its config"):
        model_from_checkpoint(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="no fastgen checkpoint there"):
        load_checkpoint(str(tmp_path / "none"))
    (tmp_path / "run" / "last" / "training.pt").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="training.pt: not a readable training state"):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path / "run"), config()).resume()


def test_ema_weights_are_kept_saved_and_loaded(tmp_path):
    trainer = run(tmp_path, epochs=2, ema_decay=0.9)
    assert os.path.isfile(tmp_path / "last" / "ema.safetensors")
    averaged = trainer.ema.state_dict()
    assert not torch.equal(torch.cat([v.flatten() for v in averaged.values() if v.is_floating_point()]),
                           params(trainer.model))
    loaded = model_from_checkpoint(str(tmp_path / "last"))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in averaged.items())
    raw = model_from_checkpoint(str(tmp_path / "last"), ema=False)
    assert torch.equal(params(raw), params(trainer.model))
    # Resuming restores the average too: a split run ends where a whole one does.
    split = tmp_path / "split"
    Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(split), config(epochs=1, ema_decay=0.9)).fit()
    resumed = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(split), config(epochs=2, ema_decay=0.9))
    resumed.fit(resume=True)
    assert all(torch.equal(resumed.ema.state_dict()[k], v) for k, v in averaged.items())


def test_metrics_log(tmp_path):
    import json

    run(tmp_path, epochs=2, log_every=2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "epoch" in r]
    steps = [r for r in records if "loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["val_bpd"] > 0 for r in epochs)
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10]


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


def test_losses_under_autocast_stay_close_to_float32(tmp_path):
    """bfloat16 autocast (the trainer's amp): within 2% of the float32 loss, for a trained model
    whose predictions are no longer near uniform; the loss itself accumulates in float32."""
    trainer = run(tmp_path, epochs=3, lr=1e-2)
    model = trainer.model.eval()
    data = tiny_data(16, seed=2)
    x, labels = data.images.long(), data.labels
    with torch.no_grad():
        full = model.loss(x, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x, labels)
            mixed = model.loss(x, labels)
    assert logits.dtype == torch.bfloat16 and mixed.dtype == torch.float32
    assert abs(mixed.item() - full.item()) <= 0.02 * full.item()


def test_training_with_amp_learns(tmp_path):
    trainer = run(tmp_path, epochs=3, amp=True, lr=1e-2)
    assert trainer.history.train_bpd[-1] < trainer.history.train_bpd[0]


def test_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, epochs=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    expected = [r["train_bpd"] for r in logged if "train_bpd" in r]
    assert [e.value for e in events.Scalars("train_bpd")] == pytest.approx(expected)
    assert len(events.Scalars("val_bpd")) == 2


def test_written_files_get_the_usual_permissions(tmp_path):
    run(tmp_path, epochs=1)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(tmp_path / "last").st_mode & 0o777 == 0o777 & ~mask
    assert os.stat(tmp_path / "samples" / "epoch_001.png").st_mode & 0o777 == 0o666 & ~mask
