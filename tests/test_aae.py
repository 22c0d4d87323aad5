"""The adversarial autoencoder: its three losses against their definitions, the priors, the
trainer's three updates, exact resume, checkpoints and bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import fastgen
from fastgen.data import digits
from fastgen.models import AdversarialAutoencoder
from fastgen.models.priors import MIXTURE_RADIUS, sample_prior
from fastgen.reference.vae_nelbo import vae_nelbo_reference
from fastgen.train import TrainConfig, Trainer
from tests.conftest import assert_same_weights


def small(**kwargs):
    options = dict(latent_dim=2, prior="mixture", n_classes=3, hidden=16, channels=4, discriminator_hidden=8,
                   likelihood="categorical") | kwargs
    torch.manual_seed(0)
    return AdversarialAutoencoder(1, 5, (5, 6), **options)


def images(n=6, seed=0):
    return torch.randint(0, 5, (n, 1, 5, 6), generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([0, 1, 2, 2, 1, 0])


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
def test_reconstruction_loss_is_the_decoders_nll_of_the_code(encoder):
    model = small(encoder=encoder)
    x = images()
    nll = model.nelbo(x, LABELS, generator=torch.Generator().manual_seed(2))
    mean, logvar = model.encode(x)
    code = mean
    if encoder == "gaussian":
        code = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(2))
    else:
        assert logvar is None
    zeros = torch.zeros_like(code)
    want = vae_nelbo_reference(model.decode(code), x, zeros, zeros, likelihood="categorical", beta=0.0, levels=5)
    torch.testing.assert_close(nll, want, rtol=1e-5, atol=1e-4)
    if encoder == "deterministic":
        torch.testing.assert_close(model.loss(x, LABELS), nll.mean() / model.dims, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["non_saturating", "lsgan"])
def test_adversarial_losses_are_their_definitions(kind):
    """Discriminator: prior draws (from each image's class component) real, codes fake; encoder:
    its codes scored as real; the discriminator reads the one-hot label."""
    model = small(loss=kind)
    x = images()
    D = model.code_discriminator

    def d(z):
        return D.body(torch.cat([z, F.one_hot(LABELS, 3).float()], 1)).squeeze(1)

    code = model.encode(x)[0]
    prior = sample_prior("mixture", 6, 2, 3, LABELS, generator=torch.Generator().manual_seed(9))
    if kind == "non_saturating":
        d_want = F.softplus(-d(prior)).mean() + F.softplus(d(code)).mean()
        g_want = F.softplus(-d(code)).mean()
    else:
        d_want = 0.5 * (d(prior) - 1).pow(2).mean() + 0.5 * d(code).pow(2).mean()
        g_want = 0.5 * (d(code) - 1).pow(2).mean()
    d_loss = model.discriminator_loss(x, LABELS, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(d_loss, d_want)
    torch.testing.assert_close(model.encoder_loss(x, LABELS), g_want)
    # The discriminator's loss trains the discriminator only; the encoder's reaches the encoder.
    d_loss.backward()
    assert all(p.grad is None for p in model.encoder_parameters())
    assert all(p.grad is not None for p in D.parameters())
    model.zero_grad(set_to_none=True)
    model.encoder_loss(x, LABELS).backward()
    assert all(p.grad is not None for p in model.encoder_parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_priors():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(400)
    z = sample_prior("mixture", 4000, 3, 10, labels, generator=g)
    for k in range(10):
        mean = z[labels == k].mean(0)
        angle = 2 * math.pi * k / 10
        torch.testing.assert_close(mean[:2], MIXTURE_RADIUS * torch.tensor([math.cos(angle), math.sin(angle)]),
                                   rtol=0, atol=0.1)
        assert abs(z[labels == k, 2].std().item() - 1.0) < 0.1
    roll = sample_prior("swiss_roll", 4000, 2, 10, labels, generator=g)
    radius = roll.norm(dim=1)
    for k in range(9):  # the arcs go outwards in the order of their classes
        assert radius[labels == k].mean() < radius[labels == k + 1].mean()
    gauss = sample_prior("gaussian", 4000, 2, 10, generator=g)
    assert abs(gauss.mean().item()) < 0.05 and abs(gauss.std().item() - 1) < 0.05
    with pytest.raises(ValueError, match="no components"):
        sample_prior("gaussian", 4, 2, 10, labels[:4])
    with pytest.raises(ValueError, match="swiss_roll prior is 2-D"):
        sample_prior("swiss_roll", 4, 3, 10)


def test_supervised_decoder_reads_the_label_and_the_encoder_does_not():
    model = small(supervised=True, prior="gaussian")
    x = images()
    a, b = model.encode(x, LABELS)[0], model.encode(x, (LABELS + 1) % 3)[0]
    assert torch.equal(a, b)
    assert (model.decode(a, LABELS) - model.decode(a, (LABELS + 1) % 3)).abs().max() > 1e-5
    with pytest.raises(ValueError, match="class-conditional"):
        model.decode(a)
    assert model.code_discriminator.n_classes is None  # the prior is not tied to the labels


def test_sampling_draws_codes_from_the_labels_components():
    model = small()
    labels = torch.tensor([0, 1, 2] * 20)
    z = model.prior_sample(60, labels, generator=torch.Generator().manual_seed(0))
    angles = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
    nearest = torch.round(angles / (2 * math.pi / 3)).long() % 3
    assert (nearest == labels).float().mean() > 0.95
    out = model.sample(60, labels, generator=torch.Generator().manual_seed(0))
    assert out.shape == (60, 1, 5, 6) and out.dtype == torch.int64 and 0 <= out.min() and out.max() < 5
    assert torch.equal(out, model.generate(z, labels))
    assert model.sample(4).shape == (4, 1, 5, 6)  # random components without labels


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="prior must be one of"):
        small(prior="uniform")
    with pytest.raises(ValueError, match="ties each class to a region"):
        small(prior="gaussian")
    with pytest.raises(ValueError, match="needs n_classes"):
        small(n_classes=None, supervised=True)
    with pytest.raises(ValueError, match="latent_dim must be 2"):
        small(prior="swiss_roll", latent_dim=3)
    with pytest.raises(ValueError, match="encoder must be one of"):
        small(encoder="flow")
    for loss in ("kl", "wasserstein"):
        with pytest.raises(ValueError, match="loss must be one of"):
            small(loss=loss)
    for n_classes in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="n_classes must be a positive integer"):
            small(n_classes=n_classes)
    for name in ("components", "discriminator_hidden"):
        with pytest.raises(ValueError, match=name):
            small(**{name: 0})
    model = small()
    with pytest.raises(ValueError, match="class-conditional"):
        model.discriminator_loss(images())  # a label-tied prior needs the labels
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        model.encoder_loss(images(), torch.tensor([0, 1, 2, 3, 0, 0]))
    with pytest.raises(ValueError, match="no posterior"):
        small(encoder="gaussian").log_likelihood(images(), LABELS)


def test_trainer_runs_the_three_updates_and_resumes_exactly(tmp_path):
    data = digits("train").subset(torch.arange(40), "digits (40)")
    val = digits("val").subset(torch.arange(20), "val")

    def trainer(out, epochs):
        torch.manual_seed(0)
        model = AdversarialAutoencoder(1, 17, 8, latent_dim=2, prior="mixture", n_classes=10, hidden=32, channels=4,
                                       discriminator_hidden=16, likelihood="categorical", encoder="gaussian")
        return Trainer(model, data, val, str(out), TrainConfig(epochs=epochs, batch_size=16, lr=2e-3, grid_samples=2,
                                                               progress=False, log_every=1, ema_decay=0.9))

    whole = trainer(tmp_path / "whole", 3)
    before = {k: v.clone() for k, v in whole.model.state_dict().items()}
    whole.fit()
    changed = {k.split(".")[0] for k, v in whole.model.state_dict().items() if not torch.equal(v, before[k])}
    assert {"encoder", "to_latent", "decoder", "code_discriminator"} <= changed
    log = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert '"d_loss"' in log and '"g_loss"' in log
    first = trainer(tmp_path / "split", 1)
    first.fit()
    resumed = trainer(tmp_path / "split", 3)
    resumed.fit(resume=True)
    assert_same_weights(whole.model.state_dict(), resumed.model.state_dict())
    steps = 3 * 3  # 40 images in batches of 16, 3 epochs
    for name, opt in whole.adversarial_optimizers.items():
        saved, again = opt.state_dict()["state"], resumed.adversarial_optimizers[name].state_dict()["state"]
        assert saved and set(saved) == set(again), name  # every parameter of the update has been stepped
        assert all(int(saved[i]["step"]) == steps and torch.equal(saved[i]["exp_avg"], again[i]["exp_avg"])
                   for i in saved), name
    assert whole.history == resumed.history
    assert_same_weights(whole.ema.state_dict(), resumed.ema.state_dict())
    labels = torch.tensor([0, 1, 2, 3])
    loaded = fastgen.load(str(tmp_path / "whole" / "last"))  # the EMA weights
    assert isinstance(loaded, AdversarialAutoencoder) and loaded.config() == whole.model.config()
    with whole.averaged():
        assert torch.equal(loaded.sample(4, labels, generator=torch.Generator().manual_seed(0)),
                           whole.model.sample(4, labels, generator=torch.Generator().manual_seed(0)))
    raw = fastgen.load(str(tmp_path / "whole" / "last"), ema=False)
    assert_same_weights(raw.state_dict(), whole.model.state_dict())


def test_the_encoders_adversarial_update_moves_the_codes_towards_the_prior():
    """The encoder's update alone (no reconstruction) against a fixed discriminator lowers its loss."""
    model = small()
    x = images(32, seed=3)
    labels = torch.arange(32) % 3
    optimizer = torch.optim.SGD(model.encoder_parameters(), lr=0.05)
    before = model.encoder_loss(x, labels).item()
    for _ in range(5):
        optimizer.zero_grad()
        model.encoder_loss(x, labels).backward()
        optimizer.step()
    assert model.encoder_loss(x, labels).item() < before
