"""The GAN trainer's parity with the likelihood trainer: the generator's moving average (updated
after each generator step, saved, resumed, loaded), bfloat16 autocast, the drift term, the
interpolation points of the gradient penalty, and spectral normalisation of every GAN's
discriminators."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.data import digits
from fastgen.models import DCGAN, MLPGAN, CycleGAN, Pix2Pix
from fastgen.nn import InstanceNormAct, spectral_normalize
from fastgen.ops import gan_loss
from fastgen.train import EMA, GANTrainConfig, GANTrainer, save_grid


def _trainer(tmp_path, model=None, n=128, **config):
    torch.manual_seed(0)
    model = model or MLPGAN(1, 17, 8, latent_dim=8, hidden=32, n_classes=10)
    cfg = GANTrainConfig(**{"epochs": 1, "batch_size": 32, "progress": False, "grid_samples": 2, **config})
    return GANTrainer(model, digits("train").subset(slice(0, n)), str(tmp_path), cfg)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_ema_follows_each_generator_step(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=0.9, n_critic=2)
    G = trainer.model.generator
    start = _state(G)
    trainer.train_step(torch.arange(32))  # discriminator only: the average stays
    assert all(torch.equal(trainer.ema.average[k], v) for k, v in start.items())
    assert trainer.ema.updates == 0 and trainer.ema.current_decay() == pytest.approx(0.1)  # warm-up: 1 / 10
    for _ in range(30):
        trainer.step += 1
        before = {k: v.clone() for k, v in trainer.ema.average.items()}
        decay = min(0.9, (1 + trainer.ema.updates) / (10 + trainer.ema.updates))
        stepped = "g" in trainer.train_step(torch.arange(32))  # every other step updates the generator
        for k, v in G.state_dict().items():
            if v.is_floating_point():  # average = decay * before + (1 - decay) * new, or unchanged
                want = decay * before[k] + (1 - decay) * v if stepped else before[k]
                torch.testing.assert_close(trainer.ema.average[k], want)
    assert trainer.ema.updates == 15 and trainer.ema.current_decay() == pytest.approx(16 / 25)  # every other step
    assert not torch.equal(trainer.ema.average["body.0.weight"], G.state_dict()["body.0.weight"])


def test_ema_is_saved_resumed_and_loaded(tmp_path):
    straight = _trainer(tmp_path / "a", epochs=2, ema_decay=0.95)
    straight.fit()
    first = _trainer(tmp_path / "b", epochs=1, ema_decay=0.95)
    first.fit()
    resumed = _trainer(tmp_path / "b", epochs=2, ema_decay=0.95)
    resumed.fit(resume=True)
    for k, v in straight.ema.average.items():
        assert torch.equal(resumed.ema.average[k], v), k
    assert resumed.ema.updates == straight.ema.updates == 8
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    averaged = fastgen.load(str(tmp_path / "a" / "last"))
    trained = fastgen.load(str(tmp_path / "a" / "last"), ema=False)
    for k, v in straight.ema.average.items():
        assert torch.equal(averaged.generator.state_dict()[k], v)
    assert torch.equal(trained.generator.state_dict()["body.0.weight"],
                       straight.model.generator.state_dict()["body.0.weight"])
    # The discriminator is the trained one in both.
    for k, v in straight.model.discriminator.state_dict().items():
        assert torch.equal(averaged.discriminator.state_dict()[k], v)


def test_grids_come_from_the_average(tmp_path):
    trainer = _trainer(tmp_path / "run", ema_decay=0.5)
    trainer.fit()
    labels = torch.arange(10).repeat_interleave(2)
    with trainer.averaged():
        averaged = trainer.model.images_from(trainer.grid_noise, labels)
    assert not torch.equal(averaged, trainer.model.images_from(trainer.grid_noise, labels))
    save_grid(str(tmp_path / "want.png"), averaged, 17, 2)
    assert (tmp_path / "run" / "samples" / "epoch_001.png").read_bytes() == (tmp_path / "want.png").read_bytes()


@pytest.mark.parametrize("loss, gp_weight, norm", [("non_saturating", None, "layer"), ("wasserstein", 10.0, "layer"),
                                                   ("hinge", None, "spectral")])
def test_amp_losses_stay_near_float32(tmp_path, loss, gp_weight, norm):
    """Under bfloat16 autocast the losses of the first three steps (same initial weights, same
    draws) stay within 1% + 0.005 of float32's (measured: at most 0.03% + 0.001): bfloat16 keeps
    8 bits of mantissa in the networks, the losses are computed in float32."""
    losses = {}
    for amp in (False, True):
        torch.manual_seed(0)
        model = DCGAN(1, 17, 8, latent_dim=8, width=8, norm=norm, loss=loss)
        trainer = _trainer(tmp_path / str(amp), model=model, amp=amp, gp_weight=gp_weight)
        torch.manual_seed(1)
        losses[amp] = [trainer.train_step(torch.arange(32) + 32 * k) for k in range(3)]
    for exact, mixed in zip(losses[False], losses[True]):
        assert exact.keys() == mixed.keys() == {"d", "g"}
        for key in exact:
            assert abs(mixed[key] - exact[key]) <= 0.01 * abs(exact[key]) + 0.005, (key, exact, mixed)


def test_discriminator_loss_has_the_drift_term(tmp_path):
    trainer = _trainer(tmp_path, model=MLPGAN(1, 17, 8, latent_dim=4, hidden=16, loss="wasserstein"), drift=0.5)
    model, index = trainer.model, torch.arange(16)
    torch.manual_seed(3)
    z = model.noise(16)
    with torch.no_grad():
        real = model.to_unit(trainer.train_data.images[index])
        real_logits, fake_logits = model.discriminator(real), model.discriminator(model.generator(z))
        want = (fake_logits.mean() - real_logits.mean() + 0.5 * real_logits.square().mean()).item()
    assert want == pytest.approx(gan_loss(real_logits, fake_logits, kind="wasserstein").item()
                                 + 0.5 * real_logits.square().mean().item())
    torch.manual_seed(3)
    assert trainer.train_step(index)["d"] == pytest.approx(want, rel=1e-5)


def test_gradient_penalty_takes_given_interpolation_weights():
    torch.manual_seed(0)
    model = MLPGAN(1, 17, 8, latent_dim=4, hidden=16)
    real, fake = torch.rand(4, 1, 8, 8) * 2 - 1, torch.rand(4, 1, 8, 8) * 2 - 1
    alpha = torch.rand(4, generator=torch.Generator().manual_seed(5))
    a = model.gradient_penalty(real, fake, alpha=alpha)
    b = model.gradient_penalty(real, fake, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"alpha must be a tensor of shape \(4,\)"):
        model.gradient_penalty(real, fake, alpha=torch.rand(3))


@pytest.mark.parametrize("build", [lambda: DCGAN(1, 17, 16, latent_dim=4, width=8, norm="spectral", n_classes=3),
                                   lambda: MLPGAN(1, 17, 8, latent_dim=4, hidden=32, norm="spectral", n_classes=3)])
def test_spectral_norm_bounds_every_discriminator_weight(build):
    torch.manual_seed(0)
    model = build()
    D = model.discriminator.train()
    x = torch.rand(4, *model.shape) * 2 - 1
    for _ in range(30):  # each training forward runs one power iteration
        D(x, torch.tensor([0, 1, 2, 0]))
    normalised = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(normalised) >= 3
    for m in normalised:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05), type(m).__name__
    # The estimate's vectors are state: a saved model loads with the same normalised weights.
    rebuilt = type(model)(**model.config())
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval(), model.eval()
    torch.testing.assert_close(rebuilt.discriminate(x, torch.tensor([0, 1, 2, 0])),
                               model.discriminate(x, torch.tensor([0, 1, 2, 0])))


@pytest.mark.parametrize("build", [lambda: Pix2Pix(1, 1, 17, 32, width=4, norm="spectral"),
                                   lambda: CycleGAN(1, 1, 17, 32, width=4, blocks=1, norm="spectral")])
def test_translators_take_spectrally_normalised_patch_discriminators(build):
    torch.manual_seed(0)
    model = build()
    for D in model.discriminators:
        assert not any(isinstance(m, InstanceNormAct) for m in D.modules())
        x = torch.rand(2, D.body[0].in_channels, 32, 32) * 2 - 1
        for _ in range(30):
            D(x)
        normalised = [m for m in D.modules() if hasattr(m, "parametrizations")]
        assert len(normalised) >= 2
        for m in normalised:
            assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2) == pytest.approx(1.0, abs=0.05)
    assert any(isinstance(m, InstanceNormAct) for m in model.generators[0].modules())  # generators keep theirs
    assert type(model)(**model.config()).config()["norm"] == "spectral"


def test_spectral_norm_option_is_checked():
    with pytest.raises(ValueError, match="norm must be one of"):
        MLPGAN(1, 17, 8, norm="batch")
    with pytest.raises(ValueError, match="norm must be one of"):
        DCGAN(1, 17, 8, norm="weight")
    with pytest.raises(ValueError, match="norm must be one of"):
        Pix2Pix(1, 1, 17, 32, norm="batch")
    with pytest.raises(ValueError, match="power_iterations must be a positive integer"):
        spectral_normalize(torch.nn.Linear(2, 2), 0)


def test_ema_helper_is_the_shared_one(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=0.9)
    assert isinstance(trainer.ema, EMA) and set(trainer.ema.average) == set(trainer.model.generator.state_dict())
    assert _trainer(tmp_path / "none").ema is None
