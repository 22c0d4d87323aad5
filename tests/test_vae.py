"""VAE, CVAE and Autoencoder: shapes, the loss against the reference op, the importance-weighted
likelihood, training on the digits, checkpoints and bad input."""
from __future__ import annotations

import math

import pytest
import torch

import fastgen
from fastgen.data import digits
from fastgen.models import VAE, Autoencoder
from fastgen.reference.vae_nelbo import LIKELIHOODS, vae_nelbo_reference
from fastgen.train import TrainConfig, Trainer


def small_vae(likelihood="categorical", arch="mlp", n_classes=None, **kwargs):
    sizes = {"latent_dim": 4, "hidden": 32, "channels": 8, **kwargs}
    return VAE(1, 17, 8, likelihood=likelihood, arch=arch, n_classes=n_classes, **sizes)


@pytest.fixture(scope="module")
def data():
    return digits("train"), digits("val")


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_decoder_layout_fits_the_loss(likelihood, arch):
    model = VAE(3, 5, (7, 9), latent_dim=3, likelihood=likelihood, arch=arch, hidden=16, channels=4, n_classes=2)
    x = torch.randint(0, 5, (2, 3, 7, 9))
    labels = torch.tensor([0, 1])
    mu, logvar = model.encode(x, labels)
    assert mu.shape == logvar.shape == (2, 3)
    recon = model.decode(mu, labels)
    params = {"bernoulli": (), "categorical": (5,), "gaussian": (2,), "logistic": (2,)}[likelihood]
    assert recon.shape == (2, *params, 3, 7, 9)
    nelbo = model.nelbo(x, labels)
    assert nelbo.shape == (2,) and torch.isfinite(nelbo).all()
    images = model.sample(4, torch.tensor([0, 1, 1, 0]), draw=True, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 3, 7, 9) and images.dtype == torch.int64
    assert images.min() >= 0 and images.max() < 5


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_nelbo_is_the_reference_loss(likelihood):
    """The model's loss is fastgen.ops.vae_nelbo of its own encoder and decoder outputs."""
    model = small_vae(likelihood)
    x = digits("val").images[:6].long()
    nelbo = model.nelbo(x, generator=torch.Generator().manual_seed(3))
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    recon = model.decode(mu + torch.exp(0.5 * logvar) * eps)
    want = vae_nelbo_reference(recon, model.data_for_likelihood(x), mu, logvar, likelihood=likelihood, levels=17)
    if likelihood == "gaussian":
        want = want - model.dims * math.log(2 / 16)  # the dequantisation term
    torch.testing.assert_close(nelbo, want, rtol=1e-4, atol=1e-3)


def test_importance_weighted_estimate_is_tighter_and_k1_is_the_elbo():
    torch.manual_seed(0)
    model = small_vae("logistic")
    x = digits("val").images[:32].long()
    with torch.no_grad():
        elbo = -model.nelbo(x).mean()
        g = torch.Generator().manual_seed(1)
        k1 = torch.stack([model.log_likelihood(x, k=1, generator=g).nats.mean() for _ in range(200)]).mean()
        k100 = model.log_likelihood(x, k=100, chunk=256, generator=g)
    torch.testing.assert_close(k1, elbo, rtol=0.01, atol=0.2)  # E[log w] is the ELBO
    assert k100.nats.mean() > elbo + 0.05  # and log mean w of 100 is tighter
    torch.testing.assert_close(k100.bits_per_dim, -k100.nats / (64 * math.log(2)))


def test_training_improves_elbo_and_estimate(data, tmp_path):
    train, val = data
    torch.manual_seed(0)
    model = small_vae("categorical", n_classes=10)
    x, labels = val.images[:64].long(), val.labels[:64]

    def measure():
        with torch.no_grad():
            return -model.nelbo(x, labels).mean().item(), model.log_likelihood(x, labels, k=50).nats.mean().item()

    elbo0, ll0 = measure()
    Trainer(model, train, val, str(tmp_path), TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False,
                                                         grid_samples=2)).fit()
    elbo1, ll1 = measure()
    assert elbo1 > elbo0 + 10 and ll1 > ll0 + 10
    assert ll1 >= elbo1
    assert (tmp_path / "samples" / "epoch_003.png").exists()
    loaded = fastgen.load(str(tmp_path))
    assert isinstance(loaded, VAE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(x, labels), model.reconstruct(x, labels))


def test_autoencoder_has_no_kl_and_no_likelihood_estimate():
    model = Autoencoder(1, 17, 8, latent_dim=4, likelihood="bernoulli", hidden=16)
    x = digits("val").images[:4].long()
    nll, recon_nll, kl = model.nelbo(x, return_parts=True)
    torch.testing.assert_close(nll, recon_nll)
    assert (kl == 0).all()
    assert "beta" not in model.config()
    with pytest.raises(ValueError, match="has no posterior"):
        model.log_likelihood(x)
    assert model.sample(3).shape == (3, 1, 8, 8)


def test_beta_weights_the_kl():
    model = small_vae("bernoulli", beta=4.0)
    x = digits("val").images[:4].long()
    _, nll, kl = model.nelbo(x, return_parts=True, generator=torch.Generator().manual_seed(0))
    nelbo = model.nelbo(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nelbo, nll + 4.0 * kl)


class TestBadInput:
    @pytest.mark.parametrize("kwargs,match", [
        (dict(likelihood="poisson"), "likelihood must be one of"),
        (dict(arch="resnet"), "arch must be one of"),
        (dict(latent_dim=0), "latent_dim must be a positive integer"),
        (dict(n_classes=0), "n_classes must be positive"),
        (dict(beta=-1.0), "beta must be non-negative"),
    ])
    def test_constructor(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            small_vae(**kwargs)

    def test_inputs(self):
        model = small_vae(n_classes=10)
        x = digits("val").images[:2].long()
        with pytest.raises(ValueError, match=r"x must be \(N, 1, 8, 8\)"):
            model.nelbo(x[:, :, :7], torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="x must hold integer levels"):
            model.nelbo(x.float(), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="class-conditional"):
            model.nelbo(x)
        with pytest.raises(ValueError, match=r"must lie in \[0, 10\)"):
            model.nelbo(x, torch.tensor([0, 10]))
        with pytest.raises(ValueError, match="k must be a positive integer"):
            model.log_likelihood(x, torch.tensor([0, 1]), k=0)
        with pytest.raises(ValueError, match=r"z must be \(N, 4\)"):
            model.decode(torch.zeros(2, 5), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="n must be a positive integer"):
            model.sample(0, torch.tensor([], dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sampling_in_other_dtypes(dtype, likelihood):
    """A float64 or bfloat16 VAE samples (it used to fail with "mat1 and mat2 must have the same
    dtype"); z is drawn in float32 and cast, so the seed gives the same latents in every dtype, and
    latents of another floating dtype are cast too."""
    torch.manual_seed(0)
    model = small_vae(likelihood, arch="conv", n_classes=10).to(dtype)
    images = model.sample(6, torch.arange(6), draw=True, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.long and 0 <= int(images.min()) and int(images.max()) < 17
    assert model.generate(torch.zeros(2, 4), torch.arange(2)).shape == (2, 1, 8, 8)  # a float32 z
    with pytest.raises(ValueError, match="z must be a floating-point tensor, got torch.int64"):
        model.generate(torch.zeros(2, 4, dtype=torch.long), torch.arange(2))


def test_a_diverged_decoder_is_refused_not_quantised():
    """NaN survives clamp(); .long() of it is an arbitrary integer far outside [0, levels)."""
    model = small_vae("logistic")
    with torch.no_grad():
        next(model.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="the decoder produced NaN or infinite values"):
        model.sample(3)
