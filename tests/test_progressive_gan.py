"""ProgressiveGAN: shapes at every stage, the equalised learning rate, the fade-in of both networks
and of the real images, the growth kept in the state dict and checkpoints, conditioning, and bad
input."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

import fastgen
from fastgen.models import DCGAN, ProgressiveGAN
from fastgen.models.progressive_gan import EqualizedConv2d, EqualizedLinear
from fastgen.train import save_checkpoint


def _model(image_size: int = 16, in_channels: int = 1, **kwargs) -> ProgressiveGAN:
    torch.manual_seed(0)
    return ProgressiveGAN(in_channels, 17, image_size, **{"latent_dim": 8, "max_channels": 8, **kwargs})


def _pool(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.avg_pool2d(x, x.shape[-1] // r)


def _up(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x.repeat_interleave(factor, 2).repeat_interleave(factor, 3)


@pytest.mark.parametrize("n_classes", [None, 3])
def test_shapes_at_every_stage(n_classes):
    model = _model(16, n_classes=n_classes, in_channels=3)
    assert model.n_stages == 3 and (model.stage, model.alpha) == (2, 1.0)  # a new model is fully grown
    labels = torch.tensor([0, 2, 1]) if n_classes else None
    z = model.noise(3)
    for stage in range(model.n_stages):
        for alpha in (0.0, 0.5, 1.0):
            model.set_growth(stage, alpha)
            r = 4 * 2 ** stage
            assert model.resolution == r
            images = model.generator(z, labels)
            assert images.shape == (3, 3, r, r)
            assert model.discriminator(images, labels).shape == (3,)
            assert model.discriminate(images, labels).shape == (3,)
            full = model.generate(z, labels)
            torch.testing.assert_close(full, _up(images, 16 // r))  # nearest upsampling to full size
            assert model.training_view(torch.rand(3, 3, 16, 16) * 2 - 1).shape == (3, 3, r, r)
            sample = model.sample(3, labels)
            assert sample.shape == (3, 3, 16, 16) and sample.dtype == torch.int64
            assert 0 <= sample.min() <= sample.max() < 17
    assert model.images_from(z, labels).shape == (3, 3, 16, 16)


def test_channel_schedule():
    assert ProgressiveGAN(image_size=32).channels == (128, 128, 128, 64)  # the default: 16 * max_channels // r
    assert ProgressiveGAN(image_size=64, max_channels=16, channel_base=256).channels == (16, 16, 16, 8, 4)
    model = _model(8)
    assert model.generator.blocks[1].conv1.in_channels == 8 and model.discriminator.last.conv.in_channels == 9


def test_equalized_learning_rate():
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 32, 3, padding=1)
    assert conv.scale == pytest.approx(math.sqrt(2 / (64 * 9)))
    assert EqualizedConv2d(5, 2, 1, gain=1.0).scale == pytest.approx(1 / math.sqrt(5))
    linear = EqualizedLinear(512, 512)
    assert linear.scale == pytest.approx(math.sqrt(2 / 512))
    # What the optimiser sees: N(0, 1) weights (2.6e5 and 1.8e4 draws), zero biases.
    for layer in (linear, conv):
        assert abs(layer.weight.mean().item()) < 0.03 and abs(layer.weight.std().item() - 1) < 0.03
        assert not layer.bias.any()
    with torch.no_grad():
        conv.bias.normal_()
        linear.bias.normal_()
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    v = torch.randn(3, 512)
    torch.testing.assert_close(linear(v), F.linear(v, linear.weight * linear.scale, linear.bias))
    # The paper's code: toRGB and the logit are linear layers with gain 1.
    model = _model(8)
    assert model.generator.to_rgb[1].scale == pytest.approx(1 / math.sqrt(8))
    assert model.discriminator.head.scale == pytest.approx(1 / math.sqrt(8))
    assert model.discriminator.from_rgb[1].scale == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("stage", [1, 2])
def test_generator_fade_in(stage):
    model = _model(16)
    z = model.noise(4)
    with torch.no_grad():
        model.set_growth(stage - 1, 1.0)
        previous = model.generator(z)
        model.set_growth(stage, 0.0)
        at_0 = model.generator(z)
        model.set_growth(stage, 1.0)
        at_1 = model.generator(z)
        model.set_growth(stage, 0.3)
        at_03 = model.generator(z)
        torch.testing.assert_close(at_0, _up(previous))  # alpha 0: the stage s - 1 network, upsampled
        torch.testing.assert_close(at_03, torch.lerp(at_0, at_1, 0.3))
        model.generator.to_rgb[stage - 1].weight.add_(1.0)
        model.set_growth(stage, 1.0)
        torch.testing.assert_close(model.generator(z), at_1, rtol=0, atol=0)  # alpha 1: the new path alone
        model.set_growth(stage, 0.3)
        assert not torch.allclose(model.generator(z), at_03)


@pytest.mark.parametrize("stage", [1, 2])
def test_discriminator_fade_in(stage):
    model = _model(16, n_classes=3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    r = 4 * 2 ** stage
    x = torch.rand(5, 1, r, r) * 2 - 1
    with torch.no_grad():
        model.set_growth(stage - 1, 1.0)
        previous = model.discriminator(F.avg_pool2d(x, 2), labels)
        model.set_growth(stage, 0.0)
        torch.testing.assert_close(model.discriminator(x, labels), previous)  # alpha 0: stage s - 1 on avgpool(x)
        model.set_growth(stage, 1.0)
        at_1 = model.discriminator(x, labels)
        model.discriminator.from_rgb[stage - 1].weight.add_(1.0)
        torch.testing.assert_close(model.discriminator(x, labels), at_1, rtol=0, atol=0)
        model.set_growth(stage, 0.5)
        assert not torch.allclose(model.discriminator(x, labels), at_1)


def test_training_view():
    model = _model(16)
    real = torch.rand(2, 1, 16, 16) * 2 - 1
    assert model.training_view(real) is real  # fully grown: the images themselves
    model.set_growth(1, 1.0)
    torch.testing.assert_close(model.training_view(real), _pool(real, 8))
    model.set_growth(1, 0.0)
    torch.testing.assert_close(model.training_view(real), _up(_pool(real, 4)))
    model.set_growth(1, 0.25)
    torch.testing.assert_close(model.training_view(real), torch.lerp(_up(_pool(real, 4)), _pool(real, 8), 0.25))
    model.set_growth(0, 0.0)  # stage 0 has no fade-in
    torch.testing.assert_close(model.training_view(real), _pool(real, 4))
    dcgan = DCGAN(1, 17, 8, latent_dim=4, width=4)
    assert dcgan.training_view(real) is real


def test_growth_is_saved_and_restored_by_the_state_dict():
    model = _model(16)
    model.set_growth(1, 0.25)
    state = model.state_dict()
    assert state["growth"].dtype == torch.float64 and state["growth"].tolist() == [1.0, 0.25]
    # The generator's state dict (which the trainer averages) holds its weights only.
    assert set(model.generator.state_dict()) == {name for name, _ in model.generator.named_parameters()}
    rebuilt = type(model)(**model.config())
    assert (rebuilt.stage, rebuilt.alpha) == (2, 1.0)
    rebuilt.load_state_dict(state)
    assert (rebuilt.stage, rebuilt.alpha) == (1, 0.25)
    assert (rebuilt.generator.stage, rebuilt.discriminator.alpha) == (1, 0.25)
    z = model.noise(3)
    torch.testing.assert_close(rebuilt.generate(z), model.generate(z))
    # A dtype change does not round the growth.
    model.set_growth(1, 0.3)
    model.to(torch.bfloat16)
    assert model.growth.dtype == torch.float64 and model.growth.tolist() == [1.0, 0.3]
    # A state dict whose growth does not fit is refused, and the growth is left as it was.
    bad = {**state, "growth": torch.tensor([5.0, 0.5], dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"growth .* does not fit this model: stage must be an integer in \[0, 3\)"):
        rebuilt.load_state_dict(bad)
    assert (rebuilt.stage, rebuilt.alpha) == (1, 0.25) and rebuilt.growth.tolist() == [1.0, 0.25]


def test_checkpoint_round_trip(tmp_path):
    model = _model(8, n_classes=2)
    model.set_growth(1, 0.5)
    save_checkpoint(str(tmp_path / "ck"), model_type="ProgressiveGAN", model_config=model.config(),
                    weights=model.state_dict())
    loaded = fastgen.load(str(tmp_path / "ck"))
    assert isinstance(loaded, ProgressiveGAN) and (loaded.stage, loaded.alpha) == (1, 0.5)
    z, labels = model.noise(4), torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(loaded.images_from(z, labels), model.images_from(z, labels))


def test_class_conditioning():
    model = _model(8, n_classes=3)
    torch.nn.init.normal_(model.discriminator.embed.weight)
    z = model.noise(1).expand(3, -1)
    labels = torch.arange(3)
    with torch.no_grad():
        images = model.generator(z, labels)
        assert not torch.allclose(images[0], images[1])  # the label reaches the generator
        logits = model.discriminator(images[:1].expand(3, -1, -1, -1), labels)
    assert len(set(logits.tolist())) == 3  # and the discriminator (projection)
    with pytest.raises(ValueError, match="class-conditional"):
        model.generate(model.noise(2))


def test_wgan_gp_step_at_a_fading_stage():
    """The trainer's discriminator loss (Wasserstein, gradient penalty, drift) at a fade-in has
    finite gradients for both networks' active blocks."""
    model = _model(16, n_classes=2)
    model.set_growth(1, 0.5)
    labels = torch.tensor([0, 1, 0, 1])
    real = model.training_view(torch.rand(4, 1, 16, 16) * 2 - 1)
    fake = model.generator(model.noise(4), labels)
    real_logits, fake_logits = model.discriminator(real, labels), model.discriminator(fake, labels)
    loss = fake_logits.mean() - real_logits.mean() + 0.001 * real_logits.square().mean()
    loss = loss + model.gradient_penalty(real, fake, labels, weight=10.0)
    loss.backward()
    for network in (model.generator, model.discriminator):
        grads = {name: p.grad for name, p in network.named_parameters()}
        assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    assert grads["from_rgb.0.weight"].abs().sum() > 0 and grads["blocks.1.conv1.weight"].abs().sum() > 0
    assert grads["from_rgb.2.weight"] is None  # stage 2 is not grown yet


class TestBadInput:
    @pytest.mark.parametrize("kwargs,match", [
        (dict(image_size=24), "image_size must be a power of two >= 4"),
        (dict(image_size=2), "image_size must be a power of two >= 4"),
        (dict(image_size=(16, 16)), "image_size must be a power of two >= 4"),
        (dict(max_channels=0), "max_channels must be a positive integer"),
        (dict(channel_base=8), r"channel_base must be at least image_size \(16\)"),
        (dict(max_channels=0.5), "max_channels must be a positive integer"),
        (dict(image_size=32, max_channels=1), r"at least image_size \(32\).*got 16 \(the default, 16 x max_channels\)"),
        (dict(group_size=0), "group_size must be a positive integer"),
        (dict(latent_dim=0), "latent_dim must be a positive integer"),
        (dict(loss="relativistic"), "loss must be one of"),
        (dict(n_classes=0), "n_classes must be positive"),
    ])
    def test_constructor(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ProgressiveGAN(**{"in_channels": 1, "levels": 17, "image_size": 16, "max_channels": 8, **kwargs})

    @pytest.mark.parametrize("stage,alpha,match", [
        (3, 1.0, r"stage must be an integer in \[0, 3\)"),
        (-1, 1.0, "stage must be an integer"),
        (1.0, 1.0, "stage must be an integer"),
        (1, 1.5, r"alpha must be a finite number in \[0, 1\]"),
        (1, -0.1, "alpha must be a finite number"),
        (1, float("nan"), "alpha must be a finite number"),
        (1, float("inf"), "alpha must be a finite number"),
        (1, torch.tensor(0.5), "alpha must be a finite number"),
    ])
    def test_set_growth(self, stage, alpha, match):
        model = _model(16)
        with pytest.raises(ValueError, match=match):
            model.set_growth(stage, alpha)
        assert (model.stage, model.alpha) == (2, 1.0)

    def test_inputs(self):
        model = _model(16)
        model.set_growth(1, 1.0)
        with pytest.raises(ValueError, match=r"stage 1 reads images \(N, 1, 8, 8\)"):
            model.discriminator(torch.zeros(2, 1, 16, 16))
        with pytest.raises(ValueError, match=r"real must be full-size images \(N, 1, 16, 16\)"):
            model.training_view(torch.zeros(2, 1, 8, 8))
        with pytest.raises(AttributeError):
            model.stage = 0  # the growth changes through set_growth only
