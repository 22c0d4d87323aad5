"""PixelCNN and GatedPixelCNN: the autoregressive property, likelihood, naive sampling, bad input."""
from __future__ import annotations

import math

import pytest
import torch

import fastgen
from fastgen.models import GatedPixelCNN, PixelCNN
from fastgen.sampling import draw_noise

MODELS = [PixelCNN, GatedPixelCNN]
H, W, L = 5, 6, 4


def make(cls, channels=1, cond=None, levels=L, **kwargs):
    """A tiny model; ``cond`` is None, 'class', 'spatial' or 'both'."""
    n_classes = 3 if cond in ("class", "both") else None
    cond_channels = 2 if cond in ("spatial", "both") else None
    torch.manual_seed(0)
    model = cls(channels, levels, (H, W), hidden_channels=12, n_layers=3, kernel_size=3, n_classes=n_classes,
                cond_channels=cond_channels, **kwargs)
    return model.double().eval()


def make_cond(kind, n):
    labels = torch.randint(0, 3, (n,))
    cond_map = torch.randn(n, 2, H, W, dtype=torch.float64)
    return {None: None, "class": labels, "spatial": cond_map, "both": (labels, cond_map)}[kind]


def order(channels):
    """(c, i, j) of every sub-pixel in generation order."""
    return [(c, i, j) for i in range(H) for j in range(W) for c in range(channels)]


CASES = [(cls, ch, cond) for cls in MODELS for ch in (1, 3) for cond in (None, "class", "spatial", "both")]
CASE_IDS = [f"{cls.__name__}-{'rgb' if ch == 3 else 'grey'}-{cond}" for cls, ch, cond in CASES]


@pytest.mark.parametrize("cls,channels,cond", CASES, ids=CASE_IDS)
def test_logits_never_see_the_current_or_later_subpixels(cls, channels, cond):
    model, x = make(cls, channels, cond), torch.randint(0, L, (1, channels, H, W))
    c_in = make_cond(cond, 1)
    base = model(x, c_in)
    steps = order(channels)
    for k, (c, i, j) in enumerate(steps[::3]):
        changed = x.clone()
        for (c2, i2, j2) in steps[3 * k:]:
            changed[0, c2, i2, j2] = torch.randint(0, L, ())
        torch.testing.assert_close(model(changed, c_in)[0, :, c, i, j], base[0, :, c, i, j], rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_pixelcnn_has_no_blind_spot(channels):
    """Every earlier sub-pixel reaches the logits of a late one (the masked-conv stack's blind spot
    to the upper right is what the two stacks remove)."""
    torch.manual_seed(0)
    model = GatedPixelCNN(channels, L, (H, W), hidden_channels=12, n_layers=5, kernel_size=3).double().eval()
    x = torch.randint(0, L, (1, channels, H, W))
    target = (channels - 1, H - 1, 2)
    base = model(x)[0, :, target[0], target[1], target[2]]
    steps = order(channels)
    for c, i, j in steps[:steps.index(target)]:
        changed = x.clone()
        changed[0, c, i, j] = (changed[0, c, i, j] + 1) % L
        out = model(changed)[0, :, target[0], target[1], target[2]]
        assert not torch.allclose(out, base, rtol=0, atol=1e-12), f"sub-pixel {(c, i, j)} is not seen"


@pytest.mark.parametrize("cls,channels,cond", CASES[::3], ids=CASE_IDS[::3])
def test_log_prob_is_the_sum_of_the_samplers_conditionals(cls, channels, cond):
    model, n = make(cls, channels, cond), 2
    c_in = make_cond(cond, n)
    calls = []
    draw_inputs = model.draw_inputs
    model.draw_inputs = lambda *a: calls.append(model.head_to_logits(draw_inputs(*a))) or draw_inputs(*a)
    x = model.sample(n, c_in, generator=torch.Generator().manual_seed(1), cache=False)
    del model.draw_inputs
    assert len(calls) == channels * H * W
    total = torch.zeros(n, dtype=torch.float64)
    for logits, (c, i, j) in zip(calls, order(channels)):
        total += torch.log_softmax(logits[:, :, c, i, j], dim=1).gather(1, x[:, c, i, j, None]).squeeze(1)
    torch.testing.assert_close(model.log_prob(x, c_in), total)


@pytest.mark.parametrize("cls", MODELS)
def test_log_prob_matches_the_reference_path(cls):
    model, x = make(cls, 3, "class").float(), torch.randint(0, L, (2, 3, H, W))
    labels = torch.tensor([0, 2])
    with fastgen.use_reference():
        want = model.log_prob(x, labels)
    torch.testing.assert_close(model.log_prob(x, labels), want, rtol=1e-5, atol=1e-4)
    assert model.log_prob(x, labels).shape == (2,)
    assert model.loss(x, labels).item() == pytest.approx(-want.mean().item() / (3 * H * W), rel=1e-4)


def test_untrained_model_is_near_uniform():
    model = make(PixelCNN, 1, levels=17)
    x = torch.randint(0, 17, (4, 1, H, W))
    bpd = fastgen.metrics.bits_per_dim(-model.log_prob(x).mean(), H * W)
    assert abs(bpd - math.log2(17)) < 0.5


@pytest.mark.parametrize("cls", MODELS)
def test_same_noise_or_seed_gives_same_images(cls):
    model = make(cls, 3, "class")
    labels = torch.tensor([0, 1, 2])
    noise = draw_noise(3, (3, H, W), generator=torch.Generator().manual_seed(5))
    a = model.sample(3, labels, noise=noise)
    b = model.sample(3, labels, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (3, 3, H, W)
    assert 0 <= a.min() and a.max() < L
    c = model.sample(3, labels, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("cls", MODELS)
def test_partial_completion_keeps_known_pixels_and_reproduces_the_sample(cls):
    model = make(cls, 1, "class")
    labels = torch.tensor([1, 2])
    noise = draw_noise(2, (1, H, W), generator=torch.Generator().manual_seed(3))
    full = model.sample(2, labels, noise=noise)
    known = torch.zeros(H, W, dtype=torch.bool)
    known[:2] = True
    # Given its own top rows and the same noise, the sampler draws the same image.
    assert torch.equal(model.sample(2, labels, partial=(full, known), noise=noise), full)
    other = torch.randint(0, L, (2, 1, H, W))
    completed = model.sample(2, labels, partial=(other, known), noise=noise)
    assert torch.equal(completed[:, :, :2], other[:, :, :2])


def test_sampling_restores_training_mode():
    model = make(GatedPixelCNN, 1, dropout=0.5).train()
    model.sample(1)
    assert model.training


@pytest.mark.parametrize("cls", MODELS)
def test_config_rebuilds_the_model(cls):
    model = make(cls, 3, "both")
    clone = cls(**model.config()).double()
    clone.load_state_dict(model.state_dict())
    x, c = torch.randint(0, L, (2, 3, H, W)), make_cond("both", 2)
    torch.testing.assert_close(clone(x, c), model(x, c))


@pytest.mark.parametrize("cls", MODELS)
def test_a_model_overfits_a_tiny_batch(cls):
    torch.manual_seed(0)
    model = cls(1, 2, (H, W), hidden_channels=16, n_layers=2, kernel_size=3)
    x = torch.randint(0, 2, (4, 1, H, W))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x).item()
    for _ in range(150):
        opt.zero_grad()
        loss = model.loss(x)
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first  # the first pixels have little context: they cannot reach zero


class TestBadInput:
    model = make(GatedPixelCNN, 1, "class")

    @pytest.mark.parametrize("x,cond,match", [
        (torch.randint(0, L, (2, 3, H, W)), torch.tensor([0, 1]), r"x must be \(N, 1, 5, 6\)"),
        (torch.randint(0, L, (2, 1, H + 1, W)), torch.tensor([0, 1]), r"x must be \(N, 1, 5, 6\)"),
        (torch.full((2, 1, H, W), L), torch.tensor([0, 1]), r"x values must lie in \[0, 4\)"),
        (torch.rand(2, 1, H, W), torch.tensor([0, 1]), "x must hold integer levels"),
        (torch.randint(0, L, (2, 1, H, W)), torch.tensor([0, 3]), r"labels must lie in \[0, 3\)"),
        (torch.randint(0, L, (2, 1, H, W)), torch.tensor([0]), r"labels must be an integer tensor of shape \(2,\)"),
        (torch.randint(0, L, (2, 1, H, W)), None, "class-conditional"),
        (torch.randint(0, L, (2, 1, H, W)), torch.randn(2, 2, H, W), "without cond_channels"),
    ])
    def test_errors_name_the_problem(self, x, cond, match):
        with pytest.raises(ValueError, match=match):
            self.model.log_prob(x, cond)

    def test_unconditional_model_rejects_labels(self):
        with pytest.raises(ValueError, match="without n_classes"):
            make(PixelCNN).log_prob(torch.randint(0, L, (2, 1, H, W)), torch.tensor([0, 1]))

    def test_spatial_map_shape(self):
        with pytest.raises(ValueError, match=r"cond map must have shape \(2, 2, 5, 6\)"):
            make(PixelCNN, cond="spatial").log_prob(torch.randint(0, L, (2, 1, H, W)), torch.randn(2, 2, H, 5))

    @pytest.mark.parametrize("kwargs,match", [
        (dict(in_channels=2), "in_channels must be 1"),
        (dict(levels=1), "levels must be between 2"),
        (dict(in_channels=3, hidden_channels=8), "hidden_channels must be a positive multiple of 3"),
    ])
    def test_constructor_arguments(self, kwargs, match):
        args = dict(in_channels=1, levels=4, image_size=4, hidden_channels=12) | kwargs
        with pytest.raises(ValueError, match=match):
            GatedPixelCNN(**args)

    def test_sampling_arguments(self):
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 1, 5, 6\)"):
            self.model.sample(2, torch.tensor([0, 1]), noise=torch.rand(2, 1, H, H))
        with pytest.raises(ValueError, match="n must be a positive integer"):
            self.model.sample(0, torch.tensor([], dtype=torch.long))
        with pytest.raises(TypeError, match="partial must be a pair"):
            self.model.sample(2, torch.tensor([0, 1]), partial=torch.zeros(2, 1, H, W))


def test_uint8_images_at_the_top_level_are_accepted():
    """256 levels in uint8 reach 255; the range check must not wrap 256 to 0 in uint8 arithmetic."""
    from fastgen.models._checks import check_images

    top = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert check_images(top, (3, 4, 4), 256).dtype == torch.long
    with pytest.raises(ValueError, match=r"values must lie in \[0, 255\)"):
        check_images(top, (3, 4, 4), 255)
