"""DCGAN and MLP GAN: shapes at every supported size, conditioning, the WGAN-GP penalty, the GAN
trainer (n_critic, grids from fixed noise, exact resumption), and the class-conditional figure."""
from __future__ import annotations

import json
import time

import pytest
import torch

import fastgen
from fastgen.data import digits
from fastgen.models import DCGAN, MLPGAN
from fastgen.reference.gradient_penalty import gradient_penalty_reference
from fastgen.train import GANTrainConfig, GANTrainer


@pytest.mark.parametrize("size", [8, 28, 32, 64, 7])
@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_dcgan_shapes(size, conditioning):
    model = DCGAN(3, 256, size, latent_dim=8, width=4, n_classes=3, conditioning=conditioning)
    labels = torch.tensor([0, 2])
    images = model.generate(model.noise(2), labels)
    assert images.shape == (2, 3, size, size) and images.abs().max() <= 1
    assert model.discriminate(images, labels).shape == (2,)
    sample = model.sample(2, labels)
    assert sample.shape == (2, 3, size, size) and sample.dtype == torch.int64 and sample.max() < 256


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_mlp_gan_and_norms(norm):
    gan = MLPGAN(1, 17, 8, latent_dim=4, hidden=16)
    assert gan.generate(gan.noise(3)).shape == (3, 1, 8, 8)
    critic = DCGAN(1, 17, 28, latent_dim=4, width=4, norm=norm)
    assert critic.discriminate(torch.zeros(2, 1, 28, 28)).shape == (2,)


def test_discriminator_reads_the_label():
    torch.manual_seed(0)
    for model in (DCGAN(1, 17, 8, latent_dim=4, width=4, n_classes=3, conditioning="concat"),
                  MLPGAN(1, 17, 8, latent_dim=4, hidden=8, n_classes=3)):
        if hasattr(model.discriminator, "embed") and model.discriminator.embed is not None:
            torch.nn.init.normal_(model.discriminator.embed.weight)
        x = torch.rand(1, 1, 8, 8) * 2 - 1
        logits = [model.discriminate(x, torch.tensor([c])).item() for c in range(3)]
        assert len(set(logits)) == 3


def test_gradient_penalty_matches_autograd():
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=4, width=4, n_classes=2, norm="none").double()
    real, fake = torch.rand(5, 1, 8, 8).double() * 2 - 1, torch.rand(5, 1, 8, 8).double() * 2 - 1
    labels = torch.tensor([0, 1, 1, 0, 1])

    def grads(penalty):
        return torch.autograd.grad(penalty, list(model.discriminator.parameters()), allow_unused=True)

    got = grads(model.gradient_penalty(real, fake, labels, weight=10.0, generator=torch.Generator().manual_seed(1)))
    alpha = torch.rand(5, 1, 1, 1, generator=torch.Generator().manual_seed(1)).double()
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(model.discriminate(x_hat, labels).sum(), x_hat, create_graph=True)
    want = grads(gradient_penalty_reference(g, 10.0))
    assert sum(a is not None for a in got) > 2
    for a, b in zip(got, want):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b)


def _trainer(tmp_path, epochs=1, **config):
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=8, width=8, n_classes=10)
    data = digits("train").subset(slice(0, 256))
    cfg = GANTrainConfig(epochs=epochs, batch_size=64, progress=False, grid_samples=2, log_every=1, **config)
    return GANTrainer(model, data, str(tmp_path), cfg)


def test_n_critic_updates_the_generator_every_nth_step(tmp_path):
    trainer = _trainer(tmp_path, n_critic=2)
    before = [p.clone() for p in trainer.model.generator.parameters()]
    assert trainer.train_step(torch.arange(64)).keys() == {"d"}
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.generator.parameters()))
    trainer.step += 1
    assert trainer.train_step(torch.arange(64)).keys() == {"d", "g"}


def test_wgan_gp_trains(tmp_path):
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=8, width=8, n_classes=10, loss="wasserstein", norm="layer")
    cfg = GANTrainConfig(epochs=1, batch_size=64, n_critic=5, gp_weight=10.0, betas=(0.0, 0.9), progress=False,
                         grid_samples=0)
    history = GANTrainer(model, digits("train").subset(slice(0, 320)), str(tmp_path), cfg).fit()
    assert len(history.d_loss) == 1 and torch.isfinite(torch.tensor(history.d_loss + history.g_loss)).all()


def test_checkpoints_resume_exactly_and_grids_use_fixed_noise(tmp_path):
    straight = _trainer(tmp_path / "a", epochs=2)
    straight.fit()
    first = _trainer(tmp_path / "b", epochs=1)
    first.fit()
    resumed = _trainer(tmp_path / "b", epochs=2)
    torch.manual_seed(123)  # resuming restores the RNG state: this must not matter
    resumed.fit(resume=True)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert straight.history == resumed.history
    torch.testing.assert_close(straight.grid_noise, resumed.grid_noise)
    assert (tmp_path / "b" / "samples" / "epoch_002.png").exists()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("d_loss" in r for r in records) and any("g_loss_epoch" in r for r in records)
    loaded = fastgen.load(str(tmp_path / "a"))
    assert isinstance(loaded, DCGAN)
    z, labels = loaded.noise(4), torch.arange(4)
    torch.testing.assert_close(loaded.images_from(z, labels), straight.model.images_from(z, labels))


def test_conditional_dcgan_draws_its_classes(tmp_path):
    """The issue's figure: a class-conditional DCGAN trained on the digits; a logistic regression
    fitted on the real training digits labels at least half of the generated samples as the class
    they were generated for (chance: 10%)."""
    from sklearn.linear_model import LogisticRegression

    train = digits("train")
    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=32, width=32, n_classes=10, loss="hinge")
    start = time.perf_counter()
    GANTrainer(model, train, str(tmp_path), GANTrainConfig(epochs=30, progress=False, grid_samples=0)).fit()
    seconds = time.perf_counter() - start
    classifier = LogisticRegression(max_iter=2000).fit(train.images.flatten(1).numpy() / 16, train.labels.numpy())
    labels = torch.arange(10).repeat_interleave(100)
    images = model.sample(1000, labels, generator=torch.Generator().manual_seed(1))
    accuracy = (classifier.predict(images.flatten(1).numpy() / 16) == labels.numpy()).mean()
    print(f"conditional DCGAN: {accuracy:.1%} of samples labelled as their class, trained in {seconds:.0f} s")
    assert accuracy >= 0.5


class TestBadInput:
    @pytest.mark.parametrize("kwargs,match", [
        (dict(loss="relativistic"), "loss must be one of"),
        (dict(conditioning="film"), "conditioning must be one of"),
        (dict(norm="instance"), "norm must be one of"),
        (dict(image_size=(8, 8)), "image_size must be an integer"),
        (dict(latent_dim=0), "latent_dim must be a positive integer"),
    ])
    def test_constructor(self, kwargs, match):
        args = {"in_channels": 1, "levels": 17, "image_size": 8, **kwargs}
        with pytest.raises(ValueError, match=match):
            DCGAN(**args)

    def test_inputs(self):
        model = DCGAN(1, 17, 8, latent_dim=4, width=4, n_classes=10)
        with pytest.raises(ValueError, match=r"z must be \(N, 4\)"):
            model.generate(torch.zeros(2, 5), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="class-conditional"):
            model.generate(torch.zeros(2, 4))
        with pytest.raises(ValueError, match="x values must lie in"):
            model.to_unit(torch.full((1, 1, 8, 8), 17))
        with pytest.raises(ValueError, match="n_critic must be a positive integer"):
            GANTrainConfig(n_critic=0)
        with pytest.raises(ValueError, match="gp_weight must be positive"):
            GANTrainConfig(gp_weight=0.0)
        with pytest.raises(TypeError, match="model must be a fastgen.models.GAN"):
            GANTrainer(fastgen.models.VAE(1, 17, 8), digits("val"), "unused")
        unlabelled = fastgen.data.ImageDataset(digits("val").images, None, 17)
        with pytest.raises(ValueError, match="has no labels"):
            GANTrainer(model, unlabelled, "unused")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("cls", [DCGAN, MLPGAN])
def test_sampling_in_other_dtypes(dtype, cls):
    """float64 and bfloat16 GANs sample (they used to fail with a dtype mismatch in the first layer)."""
    torch.manual_seed(0)
    model = cls(1, 17, 8, latent_dim=4, n_classes=10).to(dtype)
    images = model.sample(5, torch.arange(5), generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.long and 0 <= int(images.min()) and int(images.max()) < 17
    assert model.noise(3).dtype == dtype
    assert model.images_from(torch.zeros(2, 4), torch.arange(2)).shape == (2, 1, 8, 8)  # a float32 z is cast


def test_a_diverged_generator_is_refused_not_quantised():
    """NaN weights used to give levels of -9223372036854775808."""
    model = DCGAN(1, 17, 8, latent_dim=4, width=8)
    with torch.no_grad():
        next(model.generator.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="the network produced NaN or infinite values"):
        model.sample(4)


def test_a_diverging_gan_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    from fastgen.train import TrainingDiverged

    class Diverging(GANTrainer):
        def train_step(self, index):
            if self.step == 7:
                with torch.no_grad():
                    next(self.model.discriminator.parameters()).fill_(float("inf"))
            return super().train_step(index)

    torch.manual_seed(0)
    model = DCGAN(1, 17, 8, latent_dim=4, width=8)
    cfg = GANTrainConfig(epochs=3, batch_size=64, progress=False, grid_samples=2, log_every=1)
    trainer = Diverging(model, digits("train").subset(slice(0, 320)), str(tmp_path), cfg)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 8 \(epoch 2\): the discriminator loss is nan; the "
                                               r"last good checkpoint, .*last \(step 5\), is kept"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in fastgen.load(str(tmp_path)).parameters())
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"{token} in metrics.jsonl"))


def test_an_epoch_without_generator_steps_logs_null_not_nan(tmp_path):
    torch.manual_seed(0)
    cfg = GANTrainConfig(epochs=1, batch_size=64, n_critic=10, progress=False, grid_samples=0)
    history = GANTrainer(DCGAN(1, 17, 8, latent_dim=4, width=8), digits("train").subset(slice(0, 128)),
                         str(tmp_path), cfg).fit()
    assert history.g_loss == [None]
    records = [json.loads(line, parse_constant=lambda token: pytest.fail(token))
               for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["g_loss_epoch"] is None
