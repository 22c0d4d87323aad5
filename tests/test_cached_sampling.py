"""Cached incremental sampling (``sample(cache=True)``): the same images as the naive sampler, the
logits of a full forward pass at every position, for the C++ kernel and the eager reference."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.models import GatedPixelCNN, PixelCNN
from fastgen.sampling import draw_noise, naive_sample, partial_image

from fastgen.ops.cached_sampling import block_plan

from .conftest import HAS_CUDA, compiled_cpu

H, W = 5, 6
NOT_BUILT = pytest.mark.skipif(not compiled_cpu("pixelcnn_sample"), reason="fastgen._C not built")
# cpp: the fused CPU kernel; reference: the eager path; block: the GPU block sampler's program run
# on the CPU by a block of threads per image; cuda: the block sampler on a GPU.
IMPLEMENTATIONS = [
    pytest.param("cpp", id="cpp", marks=NOT_BUILT),
    pytest.param("reference", id="reference"),
    pytest.param("block", id="block", marks=NOT_BUILT),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU")),
]


def make(cls, channels=1, cond=None, levels=4, size=(H, W), **kwargs):
    """A small float32 model with weights spread out, so that its distributions are far from
    uniform and a wrong logit changes the draws. ``cond``: None, 'class', 'spatial' or 'both'."""
    torch.manual_seed(0)
    sizes = dict(hidden_channels=6 * channels, n_layers=3, kernel_size=3) if cls is GatedPixelCNN else \
        dict(hidden_channels=6 * channels, n_layers=2, kernel_size=3)
    model = cls(channels, levels, size, n_classes=3 if cond in ("class", "both") else None,
                cond_channels=2 if cond in ("spatial", "both") else None, **(sizes | kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def make_cond(kind, n):
    labels = torch.randint(0, 3, (n,))
    cond_map = torch.randn(n, 2, H, W)
    return {None: None, "class": labels, "spatial": cond_map, "both": (labels, cond_map)}[kind]


def cached(model, n, cond, impl, *, noise, partial=None, return_logits=False):
    """The cached sampler through ``impl`` (see IMPLEMENTATIONS); results on the CPU."""
    device = torch.device("cuda" if impl == "cuda" else "cpu")
    model = model.to(device)
    move = (lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)
    cond = tuple(map(move, cond)) if isinstance(cond, tuple) else move(cond)
    labels, cond_map = model.split_cond(cond, n)
    op, weights, cond_terms = model.sampling_plan(labels, cond_map)
    image, known = partial_image(partial, n, (model.in_channels, *model.image_size), model.levels, device)
    args = (cond_terms, image, known, noise.to(device), model.levels, return_logits)
    try:
        if impl == "block":
            name = "pixelcnn" if isinstance(model, PixelCNN) else "gated_pixelcnn"
            out = torch.ops.fastgen.block_sample(name, block_plan(name, weights), *args)
        else:
            with fastgen.use_reference(impl == "reference"):
                out = op(weights, *args)
        return tuple(t.cpu() for t in out)
    finally:
        model.cpu()


def naive(model, n, cond, *, noise, partial=None):
    return model.sample(n, cond, noise=noise, partial=partial, cache=False)


CASES = [(cls, ch, cond) for cls in (PixelCNN, GatedPixelCNN) for ch in (1, 3) for cond in (None, "class", "spatial",
                                                                                             "both")]
CASE_IDS = [f"{cls.__name__}-{'rgb' if ch == 3 else 'grey'}-{cond}" for cls, ch, cond in CASES]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls,channels,cond", CASES, ids=CASE_IDS)
def test_same_images_as_the_naive_sampler(impl, cls, channels, cond):
    model, n = make(cls, channels, cond), 3
    c = make_cond(cond, n)
    noise = draw_noise(n, (channels, H, W), generator=torch.Generator().manual_seed(1))
    images, _ = cached(model, n, c, impl, noise=noise)
    expected = naive(model, n, c, noise=noise)
    assert torch.equal(images, expected)
    assert len(torch.unique(expected)) > 1  # the draws are not all one level


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls,channels,cond", CASES, ids=CASE_IDS)
def test_logits_of_every_draw_match_a_forward_pass(impl, cls, channels, cond, poison):
    model, n = make(cls, channels, cond), 2
    c = make_cond(cond, n)
    noise = draw_noise(n, (channels, H, W), generator=torch.Generator().manual_seed(2))
    images, logits = cached(model, n, c, impl, noise=noise, return_logits=True)
    with torch.no_grad():
        expected = model(images, c)
    # Every position, every colour: the logits the sampler drew from are those of the finished image.
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("levels,n,kernel_size,hidden", [(2, 1, 3, 16), (256, 2, 5, 17), (3, 5, 5, 40)],
                         ids=["binary-batch1", "levels256-k5-odd-width", "levels3-batch5-k5"])
def test_sizes_levels_and_widths(impl, cls, levels, n, kernel_size, hidden):
    extra = dict(skip_channels=hidden + 3) if cls is GatedPixelCNN else dict(head_channels=hidden + 3)
    if cls is PixelCNN:
        hidden += hidden % 2  # the bottleneck halves it
    model = make(cls, 1, levels=levels, kernel_size=kernel_size, hidden_channels=hidden, **extra)
    noise = draw_noise(n, (1, H, W), generator=torch.Generator().manual_seed(3))
    images, logits = cached(model, n, None, impl, noise=noise, return_logits=True)
    assert torch.equal(images, naive(model, n, None, noise=noise))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(images), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_rows_wider_than_the_block_samplers_column_tile(impl, cls):
    # The block sampler computes rows in tiles of 16 columns: 37 columns are two full tiles and a
    # partial one.
    size = (3, 37)
    model, n = make(cls, 3, "class", size=size), 2
    labels = torch.tensor([0, 2])
    noise = draw_noise(n, (3, *size), generator=torch.Generator().manual_seed(10))
    images, logits = cached(model, n, labels, impl, noise=noise, return_logits=True)
    assert torch.equal(images, naive(model, n, labels, noise=noise))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(images, labels), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_pixelcnn_with_1x1_blocks(impl):
    """Blocks whose middle convolution is 1x1 have no taps on rows above."""
    model = make(PixelCNN, 1, kernel_size=1)
    noise = draw_noise(2, (1, H, W), generator=torch.Generator().manual_seed(9))
    assert torch.equal(cached(model, 2, None, impl, noise=noise)[0], naive(model, 2, None, noise=noise))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls,channels", [(PixelCNN, 3), (GatedPixelCNN, 1)])
def test_partial_completion(impl, cls, channels):
    model, n = make(cls, channels, "class"), 2
    labels = torch.tensor([0, 2])
    given = torch.randint(0, model.levels, (n, channels, H, W))
    known = torch.zeros(H, W, dtype=torch.bool)
    known[:2] = True
    known[3, 1:4] = True  # known pixels after unknown ones too
    noise = draw_noise(n, (channels, H, W), generator=torch.Generator().manual_seed(4))
    images, _ = cached(model, n, labels, impl, noise=noise, partial=(given, known))
    assert torch.equal(images[..., known], given[..., known])
    assert torch.equal(images, naive(model, n, labels, noise=noise, partial=(given, known)))


def test_sample_uses_the_cache_by_default_and_both_agree():
    model = make(GatedPixelCNN, 3, "both")
    c = make_cond("both", 2)
    a = model.sample(2, c, generator=torch.Generator().manual_seed(5))
    b = model.sample(2, c, generator=torch.Generator().manual_seed(5), cache=False)
    assert torch.equal(a, b)


def test_float64_models_sample_through_the_reference():
    model = make(PixelCNN, 1, "class").double()
    labels = torch.tensor([1, 2])
    noise = draw_noise(2, (1, H, W), generator=torch.Generator().manual_seed(6))
    assert torch.equal(model.sample(2, labels, noise=noise), model.sample(2, labels, noise=noise, cache=False))


@NOT_BUILT
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
@pytest.mark.parametrize("n", [2, 9], ids=["threads-share-products", "threads-take-batch-slices"])
def test_thread_count_does_not_change_the_images(cls, n):
    model = make(cls, 1, "both", hidden_channels=48)
    c = make_cond("both", n)
    noise = draw_noise(n, (1, H, W), generator=torch.Generator().manual_seed(7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = cached(model, n, c, "cpp", noise=noise, return_logits=True)
        torch.set_num_threads(2)
        multi = cached(model, n, c, "cpp", noise=noise, return_logits=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], multi[0])
    assert torch.equal(multi[0], naive(model, n, c, noise=noise))
    # Threads split the sums differently: float32 rounding relative to the largest logit.
    torch.testing.assert_close(single[1], multi[1], rtol=1e-4, atol=1e-5 * single[1].abs().max().item())


def test_naive_sampler_over_known_rows_skips_them():
    """The benchmark times naive sampling over the first rows by marking the rest known."""
    model = make(PixelCNN)
    calls = []

    def logits_fn(x):
        calls.append(1)
        return model(x)

    image = torch.zeros(1, 1, H, W, dtype=torch.long)
    known = torch.zeros_like(image, dtype=torch.bool)
    known[:, :, 1:] = True
    naive_sample(logits_fn, image, known, torch.rand(1, 1, H, W, dtype=torch.float64))
    assert len(calls) == W


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_opcheck(cls):
    model, n = make(cls, 3, "both"), 2
    labels, cond_map = model.split_cond(make_cond("both", n), n)
    op, weights, cond_terms = model.sampling_plan(labels, cond_map)
    image, known = partial_image(None, n, (3, H, W), model.levels, torch.device("cpu"))
    noise = draw_noise(n, (3, H, W), generator=torch.Generator().manual_seed(8))
    name = "pixelcnn_sample" if cls is PixelCNN else "gated_pixelcnn_sample"
    # Not test_aot_dispatch_dynamic: its gradient helper adds every output's sum into one tensor,
    # which fails on an int64 output followed by a float one (the op has no gradient to check).
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for return_logits in (False, True):
        torch.library.opcheck(getattr(torch.ops.fastgen, name),
                              (weights, cond_terms, image, known, noise, model.levels, return_logits), test_utils=utils)


class TestBadInput:
    model = make(GatedPixelCNN, 1, "class")
    labels = torch.tensor([0, 1])

    def test_partial_mask_that_does_not_fit(self):
        with pytest.raises(ValueError, match=r"partial mask of shape \(4, 4\) does not broadcast to \(2, 1, 5, 6\)"):
            self.model.sample(2, self.labels, partial=(torch.zeros(2, 1, H, W, dtype=torch.long),
                                                       torch.ones(4, 4, dtype=torch.bool)))

    def test_partial_image_of_the_wrong_shape(self):
        with pytest.raises(ValueError, match=r"partial image must be a tensor of shape \(2, 1, 5, 6\)"):
            self.model.sample(2, self.labels, partial=(torch.zeros(2, 1, H, H, dtype=torch.long),
                                                       torch.ones(H, W, dtype=torch.bool)))

    def test_noise_n_and_cond(self):
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 1, 5, 6\)"):
            self.model.sample(2, self.labels, noise=torch.rand(2, 1, W, H))
        with pytest.raises(ValueError, match="n must be a positive integer"):
            self.model.sample(0, self.labels[:0])
        with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(2,\)"):
            self.model.sample(2, torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match=r"cond map must have shape \(2, 2, 5, 6\)"):
            make(PixelCNN, cond="spatial").sample(2, torch.randn(2, 2, H, H))

    def test_direct_op_arguments(self):
        op, weights, cond = self.model.sampling_plan(self.labels, None)
        image = torch.zeros(2, 1, H, W, dtype=torch.long)
        known = torch.zeros_like(image, dtype=torch.bool)
        noise = torch.rand(2, 1, H, W, dtype=torch.float64)
        with pytest.raises(ValueError, match="noise must be a float64 tensor"):
            op(weights, cond, image, known, noise.float(), 4)
        with pytest.raises(ValueError, match="known must be a bool tensor"):
            op(weights, cond, image, known.long(), noise, 4)
        with pytest.raises(ValueError, match=r"head has 4 outputs but C \* levels = 1 \* 5"):
            op(weights, cond, image, known, noise, 5)
        with pytest.raises(ValueError, match="must be a PixelCNN sampling plan"):
            fastgen.ops.pixelcnn_sample(weights[:-1], cond, image, known, noise, 4)
        with pytest.raises(ValueError, match="do not have the dims of a Gated PixelCNN sampling plan"):
            op(weights[1:] + weights[:1], cond, image, known, noise, 4)
