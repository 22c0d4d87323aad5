"""PixelVAE: its decoder stays autoregressive given z, the ELBO is the reconstruction NLL plus the
analytic KL, the importance-weighted estimate, free bits, cached sampling exact against naive,
checkpoints, exact resume and bad input."""
from __future__ import annotations

import math

import pytest
import torch

import fastgen
from fastgen.data import digits
from fastgen.models import PixelVAE
from fastgen.reference.categorical_nll import categorical_nll_reference
from fastgen.train import TrainConfig, Trainer
from tests.conftest import assert_same_weights


def small(n_classes=None, in_channels=1, **kwargs):
    sizes = dict(latent_dim=3, pixelcnn_layers=2, hidden_channels=12 if in_channels == 3 else 8, kernel_size=3,
                 map_channels=4, hidden=16, channels=4, n_classes=n_classes) | kwargs
    torch.manual_seed(0)
    return PixelVAE(in_channels, 5, (5, 6), **sizes)


def images(n=4, in_channels=1, seed=0):
    return torch.randint(0, 5, (n, in_channels, 5, 6), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_decoder_is_autoregressive_given_z(in_channels):
    """With z fixed, changing one sub-pixel changes no logit of itself or of any sub-pixel before it
    (raster order, then R, G, B), and changes some later one."""
    model = small(in_channels=in_channels).eval()
    x = images(2, in_channels)
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    base = model(x, z)  # (N, L, C, H, W)
    order = [(i, j, c) for i in range(5) for j in range(6) for c in range(in_channels)]
    for pos in (0, 7, len(order) // 2, len(order) - 1):
        i, j, c = order[pos]
        y = x.clone()
        y[:, c, i, j] = (y[:, c, i, j] + 2) % 5
        changed = (model(y, z) - base).abs().amax((0, 1)) > 1e-6  # (C, H, W)
        for q, (a, b, d) in enumerate(order):
            if q <= pos:
                assert not changed[d, a, b], f"the logits of sub-pixel {(a, b, d)} read sub-pixel {(i, j, c)}"
        if pos < len(order) - 1:
            assert changed.any(), "no later logit reads the changed sub-pixel"


def test_the_latent_reaches_the_decoder():
    model = small().eval()
    x = images(2)
    a = model(x, torch.zeros(2, 3))
    b = model(x, torch.ones(2, 3))
    assert (a - b).abs().max() > 1e-4


def test_elbo_is_reconstruction_nll_plus_analytic_kl():
    model = small(n_classes=3)
    x, labels = images(5), torch.tensor([0, 1, 2, 1, 0])
    nelbo, nll, kl = model.nelbo(x, labels, return_parts=True, generator=torch.Generator().manual_seed(4))
    mu, logvar = model.encode(x, labels)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(4))
    logits = model(x, mu + torch.exp(0.5 * logvar) * eps, labels)
    want_nll = categorical_nll_reference(logits, x)
    want_kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(nll, want_nll, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, want_kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nelbo, want_nll + want_kl, rtol=1e-5, atol=1e-4)
    assert (kl > 0).all()


def test_beta_and_free_bits_shape_only_the_training_loss():
    model = small()
    x = images(6)
    torch.manual_seed(5)
    plain = model.loss(x)
    model.free_bits = 50.0  # far above any dimension's KL: the KL term becomes latent_dim * 50 nats
    torch.manual_seed(5)
    floored = model.loss(x)
    torch.manual_seed(5)
    nelbo, nll, kl = model.nelbo(x, return_parts=True)
    torch.testing.assert_close(plain, nelbo.mean() / model.dims, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(floored, (nll.mean() + 3 * 50.0) / model.dims, rtol=1e-5, atol=1e-6)
    assert model.nelbo(x).mean() < floored * model.dims  # the bound itself is not floored
    torch.manual_seed(5)
    torch.testing.assert_close(model.eval().loss(x), plain)  # nor is validation's loss
    model.train()
    # Its gradients: the reconstruction NLL's reach every network; the floored KL gives the encoder none.
    model.zero_grad()
    torch.manual_seed(5)
    model.loss(x).backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch.manual_seed(5)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    (categorical_nll_reference(model(x, z), x).mean() / model.dims).backward()
    want = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(want) and any(n.startswith("pixelcnn.") for n in got) and "to_latent.weight" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_importance_weighted_estimate_is_at_least_the_elbo_and_k1_is_the_elbo():
    model = small().eval()
    x = images(3)
    repeats = x.repeat(300, 1, 1, 1)  # image i at rows i, i + 3, ...: 300 draws of z each, in one batch
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = -model.nelbo(repeats).view(300, 3).mean(0)
    k1 = model.log_likelihood(repeats, k=1, chunk=4096).nats.view(300, 3).mean(0)
    k50 = model.log_likelihood(x, k=50, generator=torch.Generator().manual_seed(1)).nats
    torch.testing.assert_close(k1, elbo, rtol=0, atol=0.05 * elbo.abs().max().item())
    assert (k50 >= elbo - 0.02).all()
    bpd = model.log_likelihood(x, k=4, chunk=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(bpd.bits_per_dim, -bpd.nats / (model.dims * math.log(2.0)))


@pytest.mark.parametrize("n_classes", [None, 3])
def test_cached_sampling_is_exact_against_naive(n_classes):
    model = small(n_classes=n_classes)
    labels = torch.tensor([0, 2, 1, 1]) if n_classes else None
    cached = model.sample(4, labels, generator=torch.Generator().manual_seed(7))
    naive = model.sample(4, labels, generator=torch.Generator().manual_seed(7), cache=False)
    assert torch.equal(cached, naive)
    assert cached.shape == (4, 1, 5, 6) and cached.dtype == torch.int64
    assert 0 <= cached.min() and cached.max() < 5
    again = model.sample(4, labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(cached, again)
    z = torch.randn(4, 3)
    noise = torch.rand(4, 1, 5, 6)
    assert torch.equal(model.generate(z, labels, noise=noise), model.generate(z, labels, noise=noise, cache=False))


def test_rgb_sampling_and_reconstruction():
    model = small(in_channels=3)
    x = images(2, 3)
    assert model.reconstruct(x, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 5, 6)
    cached = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cached, model.sample(2, generator=torch.Generator().manual_seed(1), cache=False))


def test_bad_input_is_refused():
    model = small(n_classes=3)
    with pytest.raises(ValueError, match="x must be"):
        model.loss(torch.zeros(2, 1, 4, 4, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 5\)"):
        model.loss(torch.full((2, 1, 5, 6), 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-conditional"):
        model.loss(images(2))
    with pytest.raises(ValueError, match="z must be"):
        model.generate(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(0, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.log_likelihood(images(2), torch.tensor([0, 1]), k=0)
    for name, value in (("map_channels", 0), ("map_channels", 2.5), ("pixelcnn_layers", 0), ("free_bits", -1.0),
                        ("free_bits", math.inf), ("free_bits", math.nan), ("free_bits", "a"), ("free_bits", None)):
        with pytest.raises(ValueError, match=name):
            PixelVAE(1, 5, 6, **{name: value})
    with pytest.raises(ValueError, match="hidden_channels"):
        PixelVAE(3, 5, 6, hidden_channels=8)


def tiny_data():
    data = digits("train")
    return data.subset(torch.arange(48), "digits (48)")


def test_training_resume_checkpoint_and_load(tmp_path):
    """Trains (the loss falls), resumes bit for bit, and fastgen.load rebuilds the model (EMA or not)."""
    def trainer(out, epochs):
        torch.manual_seed(0)
        model = PixelVAE(1, 17, 8, latent_dim=4, pixelcnn_layers=2, hidden_channels=16, map_channels=8, hidden=32,
                         channels=8, n_classes=10, free_bits=0.1)
        return Trainer(model, tiny_data(), digits("val").subset(torch.arange(32), "val"), str(out),
                       TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, grid_samples=2, progress=False,
                                   ema_decay=0.9))

    whole = trainer(tmp_path / "whole", 3)
    whole.fit()
    assert whole.history.train_bpd[-1] < whole.history.train_bpd[0]
    first = trainer(tmp_path / "split", 1)
    first.fit()
    resumed = trainer(tmp_path / "split", 3)
    resumed.fit(resume=True)
    assert_same_weights(whole.model.state_dict(), resumed.model.state_dict())
    assert whole.history == resumed.history
    loaded = fastgen.load(str(tmp_path / "whole" / "last"), ema=False)
    assert isinstance(loaded, PixelVAE) and loaded.config() == whole.model.config()
    assert_same_weights(whole.model.state_dict(), loaded.state_dict())
    averaged = fastgen.load(str(tmp_path / "whole" / "last"))
    assert_same_weights(whole.ema.state_dict(), averaged.state_dict())
    assert (tmp_path / "whole" / "samples" / "epoch_003.png").exists()
