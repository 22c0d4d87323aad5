"""Trainer: determinism, exact resumption (epoch ends and mid-epoch), best checkpoint, grids,
atomic checkpoints; a run is never lost (run directories, divergence) and nothing is loaded unchecked."""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastgen.data import ImageDataset
from fastgen.models import GatedPixelCNN, PixelCNN
from fastgen.train import (CheckpointError, RunDirectoryError, TrainConfig, Trainer, TrainingDiverged, load_checkpoint,
                           model_from_checkpoint, save_checkpoint)

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
    assert not any(m.training for m in model.modules())  # loaded for use: dropout off
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


# -- a run is never lost: the run directory ----------------------------------------------------------
def test_training_into_a_run_needs_resume_or_overwrite(tmp_path):
    """A finished run is not clobbered by a new one started in its directory by accident."""
    first = run(tmp_path, epochs=1)
    best = (tmp_path / "best" / "model.safetensors").read_bytes()
    fresh = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path), config(epochs=1, lr=0.5))
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(best/, last/, metrics.jsonl\).*--resume.*"
                                                r"--overwrite"):
        fresh.fit()
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == best
    with pytest.raises(RunDirectoryError, match="exclude each other"):
        fresh.fit(resume=True, overwrite=True)
    # overwrite replaces the run: its checkpoints, metrics and grids, nothing else of the directory
    (tmp_path / "notes.txt").write_text("mine")
    fresh.fit(overwrite=True)
    assert load_checkpoint(str(tmp_path / "last")).config["train_config"]["lr"] == 0.5
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1  # the old run's lines are gone
    assert (tmp_path / "notes.txt").read_text() == "mine" and first.step == fresh.step


def test_a_gan_run_needs_resume_or_overwrite_too(tmp_path):
    from fastgen.models import DCGAN
    from fastgen.train import GANTrainConfig, GANTrainer

    def gan_trainer():
        torch.manual_seed(0)
        return GANTrainer(DCGAN(1, 4, 4, latent_dim=2, width=4), ImageDataset(tiny_data().images[..., :4], None, 4),
                          str(tmp_path), GANTrainConfig(epochs=1, batch_size=8, progress=False, grid_samples=0))

    gan_trainer().fit()
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        gan_trainer().fit()
    gan_trainer().fit(overwrite=True)


def test_resume_needs_a_last_checkpoint_and_best_only_improves(tmp_path):
    """--resume without last/ refused (it used to start afresh and overwrite best/); with last.old
    (a replacement interrupted between its renames) it resumes from there; the best validation
    figure carries over, so best/ is replaced only by a better model."""
    scripted = iter([3.90, 4.00, 4.12, 3.95, 3.80])

    class Scripted(Trainer):
        def evaluate(self, data, batch_size=256):
            return next(scripted)

    def trainer(epochs):
        return Scripted(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path), config(epochs=epochs))

    trainer(2).fit()  # 3.90 (best), 4.00
    best = (tmp_path / "best" / "model.safetensors").read_bytes()
    import shutil

    shutil.move(tmp_path / "last", tmp_path / "gone")
    with pytest.raises(RunDirectoryError, match=r"nothing to resume, there is no last/ checkpoint \(it holds best/"):
        trainer(3).fit(resume=True)
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == best
    shutil.move(tmp_path / "gone", tmp_path / "last.old")
    resumed = trainer(4)
    resumed.fit(resume=True)  # from last.old: 4.12, 3.95; neither beats 3.90
    assert resumed.history.val_bpd == [3.90, 4.00, 4.12, 3.95] and resumed.history.best_epoch == 0
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == best
    trainer(5).fit(resume=True)  # 3.80 beats it
    assert load_checkpoint(str(tmp_path / "best")).config["history"]["best_val_bpd"] == 3.80
    with pytest.raises(RunDirectoryError, match="nothing to resume"):
        trainer(1).__class__(tiny_model(), tiny_data(), None, str(tmp_path / "empty"), config()).fit(resume=True)


def test_orphans_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    run(tmp_path, epochs=1)
    (tmp_path / ".last.tmp-abc123").mkdir()
    (tmp_path / ".last.tmp-abc123" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".best.tmp-x").mkdir()
    (tmp_path / "samples" / ".tmp-q1").write_bytes(b"half a png")
    shutil_copy = __import__("shutil").copytree
    shutil_copy(tmp_path / "last", tmp_path / "last.old")  # the crash came after the new last was in place
    Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path), config(epochs=2)).fit(resume=True)
    assert sorted(os.listdir(tmp_path)) == ["best", "last", "metrics.jsonl", "samples"] + (
        ["tensorboard"] if os.path.isdir(tmp_path / "tensorboard") else [])
    assert not [n for n in os.listdir(tmp_path / "samples") if n.startswith(".")]


# -- a diverging run stops ---------------------------------------------------------------------------
def strict_json_lines(path):
    def refuse(token):
        raise ValueError(f"{token} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


class NanGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poisoned", ["loss", "gradient"])
def test_a_diverging_run_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, poisoned):
    class Diverging(Trainer):
        def _loss(self, data, index):
            loss = super()._loss(data, index)
            if self.step == 6:  # the 2nd step of epoch 2 (5 steps per epoch)
                return loss * float("nan") if poisoned == "loss" else NanGradient.apply(loss)
            return loss

    trainer = Diverging(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path), config(epochs=3, log_every=1))
    what = "the training loss is nan" if poisoned == "loss" else "the gradient norm is nan"
    with pytest.raises(TrainingDiverged, match=rf"diverged at step 7 \(epoch 2\): {what}; the last good checkpoint, "
                                               rf".*last \(step 5\), is kept"):
        trainer.fit()
    saved = load_checkpoint(str(tmp_path / "last"))
    assert saved.config["step"] == 5 and torch.isfinite(params(model_from_checkpoint(str(tmp_path)))).all()
    assert all(torch.isfinite(v).all() for v in saved.weights.values() if v.is_floating_point())
    records = strict_json_lines(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_real_divergence_from_a_huge_learning_rate_stops_the_run(tmp_path):
    from fastgen.models import VAE

    torch.manual_seed(0)
    vae = VAE(1, 4, (4, 5), latent_dim=2, hidden=8, likelihood="gaussian")
    trainer = Trainer(vae, tiny_data(), tiny_data(8, seed=1), str(tmp_path), config(epochs=5, lr=1e6))
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+ \(epoch \d\): .* is (nan|inf)"):
        trainer.fit()
    for name in ("last", "best"):
        if (tmp_path / name).exists():
            assert torch.isfinite(params(model_from_checkpoint(str(tmp_path / name)))).all()
    if (tmp_path / "metrics.jsonl").exists():
        strict_json_lines(tmp_path / "metrics.jsonl")


def test_non_finite_weights_are_never_written(tmp_path):
    model = tiny_model()
    weights = model.state_dict()
    weights["head.3.weight"] = weights["head.3.weight"].clone().fill_(float("inf"))
    with pytest.raises(ValueError, match="refusing to write a checkpoint whose weights hold non-finite values"):
        save_checkpoint(str(tmp_path / "ck"), model_type="GatedPixelCNN", model_config=model.config(), weights=weights)
    assert not (tmp_path / "ck").exists() and os.listdir(tmp_path) == []


def test_checkpoint_configs_and_metrics_are_strict_json(tmp_path):
    """Before any validation best_val_bpd is infinite: it is stored as null, not as Infinity."""
    trainer = Trainer(tiny_model(), tiny_data(), None, str(tmp_path), config(epochs=1, checkpoint_every=1))
    trainer.fit()
    text = (tmp_path / "last" / "config.json").read_text()
    saved = json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in config.json"))
    assert saved["history"]["best_val_bpd"] is None
    resumed = Trainer(tiny_model(), tiny_data(), None, str(tmp_path), config(epochs=2))
    resumed.fit(resume=True)
    assert resumed.history.best_val_bpd == float("inf")
    strict_json_lines(tmp_path / "metrics.jsonl")


# -- hyper-parameters are checked where they are set ---------------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("lr", float("inf"), "lr must be positive and finite"),
    ("lr", float("nan"), "lr must be positive and finite"),
    ("lr", 0.0, "lr must be positive and finite"),
    ("lr", -1e-3, "lr must be positive and finite"),
    ("lr_decay", -1.0, r"lr_decay must be a finite number in \(0, 1\]"),
    ("lr_decay", 1.5, r"lr_decay must be a finite number in \(0, 1\]"),
    ("lr_decay", 0.0, r"lr_decay must be a finite number in \(0, 1\]"),
    ("grad_clip", -1.0, "grad_clip must be positive and finite or None"),
    ("grad_clip", float("inf"), "grad_clip must be positive and finite or None"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("epochs", 0, "epochs must be a positive integer"),
    ("epochs", -3, "epochs must be a positive integer"),
    ("seed", -1, "seed must be a non-negative integer"),
    ("seed", 2**64, "seed must be a non-negative integer"),
    ("grid_samples", -1, "grid_samples must be a non-negative integer"),
    ("grid_samples", 10**6, r"grid_samples must be a non-negative integer \(at most 100\)"),
    ("ema_decay", 1.0, r"ema_decay must be a finite number in \(0, 1\) or None"),
    ("checkpoint_every", 0, "checkpoint_every must be a positive integer or None"),
    ("log_every", 0, "log_every must be a positive integer"),
])
def test_nonsense_hyperparameters_are_refused_by_the_config(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("epochs", 2.5), ("batch_size", "64"), ("lr", "1e-3"), ("amp", 1),
                                         ("epochs", True), ("progress", None)])
def test_hyperparameters_of_the_wrong_type_are_refused(field, value):
    with pytest.raises(TypeError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field,value,message", [
    ("lr_generator", float("inf"), "lr_generator must be positive and finite"),
    ("lr_discriminator", float("nan"), "lr_discriminator must be positive and finite"),
    ("betas", (0.5, 1.0), r"betas\[1\] must be a finite number in \[0, 1\)"),
    ("betas", (0.5,), "betas must be a pair"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("epochs", 0, "epochs must be a positive integer"),
    ("gp_weight", float("inf"), "gp_weight must be positive and finite"),
    ("n_critic", 0, "n_critic must be a positive integer"),
    ("seed", -1, "seed must be a non-negative integer"),
])
def test_nonsense_gan_hyperparameters_are_refused_by_the_config(field, value, message):
    from fastgen.train import GANTrainConfig

    with pytest.raises((ValueError, TypeError), match=message):
        GANTrainConfig(**{field: value})


def test_trainer_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="train_data .* holds no images"):
        Trainer(tiny_model(), tiny_data().subset(slice(0, 0)), None, str(tmp_path))
    with pytest.raises(ValueError, match=r"the model takes images of shape \(1, 4, 5\), images has \(1, 4, 4\)"):
        Trainer(tiny_model(), ImageDataset(tiny_data().images[..., :4], tiny_data().labels, 4), None, str(tmp_path))
    with pytest.raises(ValueError, match="the model has 4 levels, images has 8"):
        Trainer(tiny_model(), ImageDataset(tiny_data().images, tiny_data().labels, 8), None, str(tmp_path))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path), {"epochs": 1})
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path), device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available here"):
            Trainer(tiny_model(), tiny_data(), None, str(tmp_path), device="cuda")


# -- resuming ----------------------------------------------------------------------------------------
def test_a_changed_learning_rate_on_resume_applies_with_a_warning(tmp_path):
    run(tmp_path, epochs=1, lr=3e-3, lr_decay=0.5)
    resumed = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path),
                      config(epochs=2, lr=1e-4, lr_decay=0.9))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.fit(resume=True)
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "lr changes from 0.003 to 0.0001 (from step 5 on)", "lr_decay changes from 0.5 to 0.9 (from step 5 on)"]
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.9)
    same = Trainer(tiny_model(), tiny_data(), tiny_data(8, seed=1), str(tmp_path),
                   config(epochs=3, lr=1e-4, lr_decay=0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same options again: nothing changes, nothing to say
        same.fit(resume=True)
    for field, value in (("batch_size", 4), ("seed", 7)):
        other = Trainer(tiny_model(), tiny_data(), None, str(tmp_path), config(epochs=4, **{field: value}))
        with pytest.raises(CheckpointError, match=f"trained with {field}=.*so {field} must stay"):
            other.fit(resume=True)


def test_resuming_into_another_model_or_data_is_refused(tmp_path):
    run(tmp_path, epochs=1)
    torch.manual_seed(0)
    wider = GatedPixelCNN(1, 4, (4, 5), hidden_channels=16, n_layers=2, kernel_size=3, n_classes=3, dropout=0.2)
    with pytest.raises(CheckpointError, match="has hidden_channels=8, skip_channels=8; the model to resume has hidden_channels=16"):
        Trainer(wider, tiny_data(), None, str(tmp_path), config(epochs=2)).fit(resume=True)
    with pytest.raises(CheckpointError, match="trained on 24 images, this training set has 20"):
        Trainer(tiny_model(), tiny_data(20), None, str(tmp_path), config(epochs=2)).fit(resume=True)


def damaged_copy(tmp_path, name, edit):
    import shutil

    shutil.copytree(tmp_path / "run" / "last", tmp_path / name)
    config_file = tmp_path / name / "config.json"
    saved = json.loads(config_file.read_text())
    edit(saved)
    config_file.write_text(json.dumps(saved))
    return str(tmp_path / name)


def test_checkpoint_configs_of_the_wrong_types_get_clear_errors(tmp_path):
    run(tmp_path / "run", epochs=1)
    cases = [
        (lambda c: c.update(version="2"), r'"version" must be a positive integer, got \'2\''),
        (lambda c: c.update(version=2), "written by a newer fastgen"),
        (lambda c: c.update(model_type=["GatedPixelCNN"]), r'"model_type" must be a string naming the model class'),
        (lambda c: c.update(model_type="ResNet"), "unknown model type 'ResNet'"),
        (lambda c: c.update(model_config=[1, 2]), r'"model_config" must be an object'),
        (lambda c: c["model_config"].update(hidden_channels="8"), "its model_config is not a valid GatedPixelCNN"),
        (lambda c: c["model_config"].update(bogus=1), "its model_config is not a valid GatedPixelCNN"),
    ]
    for k, (edit, message) in enumerate(cases):
        with pytest.raises(CheckpointError, match=message):
            model_from_checkpoint(damaged_copy(tmp_path, f"c{k}", edit))
    nan_config = tmp_path / "nan"
    import shutil

    shutil.copytree(tmp_path / "run" / "last", nan_config)
    (nan_config / "config.json").write_text((nan_config / "config.json").read_text().replace(
        '"hidden_channels": 8', '"hidden_channels": NaN'))
    with pytest.raises(CheckpointError, match="not a readable checkpoint config.*NaN is not a JSON value"):
        model_from_checkpoint(str(nan_config))
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        model_from_checkpoint(str(tmp_path / "run"), device="gpu")


def test_damaged_training_states_get_clear_errors(tmp_path):
    run(tmp_path / "run", epochs=1)
    path = tmp_path / "run" / "last" / "training.pt"
    state = torch.load(path, weights_only=True)
    for key in ("rng", "optimizer"):
        torch.save({k: v for k, v in state.items() if k != key}, path)
        with pytest.raises(CheckpointError, match=rf"training.pt: the training state lacks \['{key}'\]"):
            Trainer(tiny_model(), tiny_data(), None, str(tmp_path / "run"), config(epochs=2)).fit(resume=True)
    torch.save(state | {"rng": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match='"rng" is not a CPU generator state'):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path / "run"), config(epochs=2)).fit(resume=True)
    assert "cuda_rng" not in state  # a CPU run keeps the CPU generator's state only
    torch.save(state | {"cuda_rng": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match='"cuda_rng" is not a CUDA generator state'):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path / "run"), config(epochs=2)).fit(resume=True)
    torch.save(state | {"optimizer": {"state": {}, "param_groups": []}}, path)
    with pytest.raises(CheckpointError, match="the optimiser or scheduler state does not fit this model"):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path / "run"), config(epochs=2)).fit(resume=True)
    torch.save(state, path)
    damaged_copy(tmp_path, "counters", lambda c: c.update(step="5"))
    with pytest.raises(CheckpointError, match='"step" must be a non-negative integer'):
        Trainer(tiny_model(), tiny_data(), None, str(tmp_path), config(epochs=2)).resume(str(tmp_path / "counters"))


# -- loads never allocate what the file cannot hold -----------------------------------------------------
@pytest.mark.parametrize("edit", [{"hidden_channels": 10**9}, {"n_layers": 10**8}, {"hidden_channels": 100_000}])
def test_a_config_larger_than_its_weights_is_refused_before_anything_is_allocated(tmp_path, edit):
    """The config is checked against the safetensors header on the meta device: a config of 10**9
    channels or 10**8 layers is refused at once, with no real tensor built."""
    import time

    from torch.nn.modules.module import register_module_parameter_registration_hook

    run(tmp_path / "run", epochs=1)
    path = damaged_copy(tmp_path, "huge", lambda c: c["model_config"].update(edit))
    real = []
    handle = register_module_parameter_registration_hook(
        lambda module, name, p: real.append(p.numel()) if p is not None and p.device.type != "meta" else None)
    start = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match="more parameters than its weights file holds"):
            model_from_checkpoint(path)
    finally:
        handle.remove()
    assert real == [] and time.perf_counter() - start < 10


def test_checkpoint_files_share_the_usual_permissions(tmp_path):
    """safetensors writes its files 0600; every file of a checkpoint gets 0666 less the umask."""
    run(tmp_path, epochs=1, ema_decay=0.9)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("last", "best"):
        for entry in os.listdir(tmp_path / name):
            assert os.stat(tmp_path / name / entry).st_mode & 0o777 == 0o666 & ~mask, entry


# -- torchrun: every process needs a sample of every batch ------------------------------------------------
@pytest.mark.parametrize("batch_sizes,world,ok", [({5, 4}, 2, True), ({5, 1}, 2, False), ({1}, 1, True),
                                                  ({3, 8}, 4, False), ({4}, 4, True)])
def test_runs_that_would_leave_a_process_without_samples_are_refused(batch_sizes, world, ok):
    from fastgen.train.distributed import check_shards

    if ok:
        check_shards(batch_sizes, world)
    else:
        with pytest.raises(ValueError, match=rf"under torchrun with {world} processes every batch needs at least "
                                             rf"{world} samples .* a batch of {min(batch_sizes)}"):
            check_shards(batch_sizes, world)


def test_the_trainers_name_the_batch_sizes_of_their_runs(tmp_path):
    from fastgen.models import MLPGAN, ProgressiveGAN
    from fastgen.train import GANTrainConfig, GANTrainer, ProgressiveTrainConfig, ProgressiveTrainer

    square = ImageDataset(torch.randint(0, 4, (23, 1, 8, 8), dtype=torch.uint8), None, 4)  # batches of 5: 3 last
    assert GANTrainer(MLPGAN(1, 4, 8), square, str(tmp_path / "g"), GANTrainConfig(batch_size=5))._batch_sizes() \
        == {5, 3}
    assert GANTrainer(MLPGAN(1, 4, 8), square, str(tmp_path / "g"), GANTrainConfig(batch_size=64))._batch_sizes() \
        == {23}
    progressive = ProgressiveTrainer(ProgressiveGAN(1, 4, 8, latent_dim=4, max_channels=4), square, str(tmp_path / "p"),
                                     ProgressiveTrainConfig(batch_size=6, stage_batch_sizes=(7,), stable_images=8))
    assert progressive._batch_sizes() == {7, 6}  # the stream's batches are all full
