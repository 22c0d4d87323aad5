"""The sampling program (fastgen/program.py) and its interpreters: every model's cached sampler
draws the naive sampler's images, the draw's inputs are a forward pass's at every position, for
the C++ interpreter, the reference, the GPU block interpreter run on the CPU, and CUDA."""
from __future__ import annotations

import pytest
import torch

import fastgen
from fastgen.models import GatedPixelCNN, PixelCNN, PixelCNNpp
from fastgen.ops import sample_program
from fastgen.program import SamplingProgram
from fastgen.sampling import draw_noise, partial_image

from .conftest import HAS_CUDA, compiled_cpu
from .test_pixelcnnpp import labels_for
from .test_pixelcnnpp import make as make_pp

H, W = 5, 6
NOT_BUILT = pytest.mark.skipif(not compiled_cpu("sample_program"), reason="fastgen._C not built")
BLOCK_NOT_BUILT = pytest.mark.skipif(not compiled_cpu("sample_program_block"), reason="fastgen._C not built")
# cpp: the C++ interpreter; reference: the eager interpreter; block: the GPU block interpreter's
# program run on the CPU by a block of threads per image; cuda: the block interpreter on a GPU.
IMPLEMENTATIONS = [
    pytest.param("cpp", id="cpp", marks=NOT_BUILT),
    pytest.param("reference", id="reference"),
    pytest.param("block", id="block", marks=BLOCK_NOT_BUILT),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU")),
]


def run(program: SamplingProgram, image, known, noise, impl: str, return_draw_inputs: bool = False):
    """``program`` through ``impl`` (see IMPLEMENTATIONS); results on the CPU."""
    if impl == "block":
        tensors, ints = program.encode()
        out = torch.ops.fastgen.sample_program_block(tensors, ints, image, known, noise, return_draw_inputs)
    else:
        with fastgen.use_reference(impl == "reference"):
            out = sample_program(program, image, known, noise, return_draw_inputs)
    return tuple(t.cpu() for t in out)


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


def make_cond(kind, n, size=(H, W)):
    labels = torch.randint(0, 3, (n,))
    cond_map = torch.randn(n, 2, *size)
    return {None: None, "class": labels, "spatial": cond_map, "both": (labels, cond_map)}[kind]


def cached(model, n, cond, impl, *, noise, partial=None, return_draw_inputs=False):
    """The model's cached sampler through ``impl``; results on the CPU."""
    device = torch.device("cuda" if impl == "cuda" else "cpu")
    model = model.to(device)
    move = (lambda t: t.to(device) if isinstance(t, torch.Tensor) else t)
    cond = tuple(map(move, cond)) if isinstance(cond, tuple) else move(cond)
    try:
        with torch.no_grad():
            program = model.sampling_program(model.prepare_cond(cond, n))
        image, known = partial_image(partial, n, (model.in_channels, *model.image_size), model.levels, device)
        return run(program, image, known, noise.to(device), impl, return_draw_inputs)
    finally:
        model.cpu()


def assert_close_to_forward(got, want):
    """float32 agreement with a forward pass: each path rounds its sums in its own order, so the
    absolute tolerance scales with the largest value."""
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-6 * max(1.0, want.abs().max().item()))


def naive(model, n, cond, *, noise, partial=None):
    return model.sample(n, cond, noise=noise, partial=partial, cache=False)


CASES = [(cls, ch, cond) for cls in (PixelCNN, GatedPixelCNN) for ch in (1, 3) for cond in (None, "class", "spatial",
                                                                                             "both")]
CASE_IDS = [f"{cls.__name__}-{'rgb' if ch == 3 else 'grey'}-{cond}" for cls, ch, cond in CASES]


# -- PixelCNN and Gated PixelCNN ------------------------------------------------------------------

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
    images, inputs = cached(model, n, c, impl, noise=noise, return_draw_inputs=True)
    with torch.no_grad():
        expected = model(images, c)
    # Every position, every colour: the logits the sampler drew from are those of the finished image.
    assert_close_to_forward(model.head_to_logits(inputs), expected)


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
    images, inputs = cached(model, n, None, impl, noise=noise, return_draw_inputs=True)
    assert torch.equal(images, naive(model, n, None, noise=noise))
    with torch.no_grad():
        assert_close_to_forward(model.head_to_logits(inputs), model(images))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_rows_wider_than_the_block_interpreters_column_tile(impl, cls):
    # The block interpreter computes rows in tiles of 16 columns: 37 columns are two full tiles
    # and a partial one.
    size = (3, 37)
    model, n = make(cls, 3, "class", size=size), 2
    labels = torch.tensor([0, 2])
    noise = draw_noise(n, (3, *size), generator=torch.Generator().manual_seed(10))
    images, inputs = cached(model, n, labels, impl, noise=noise, return_draw_inputs=True)
    assert torch.equal(images, naive(model, n, labels, noise=noise))
    with torch.no_grad():
        assert_close_to_forward(model.head_to_logits(inputs), model(images, labels))


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


@pytest.mark.parametrize("impl", IMPLEMENTATIONS[:2])
def test_float64_models(impl):
    model = make(PixelCNN, 1, "class").double()
    labels = torch.tensor([1, 2])
    noise = draw_noise(2, (1, H, W), generator=torch.Generator().manual_seed(6))
    images, inputs = cached(model, 2, labels, impl, noise=noise, return_draw_inputs=True)
    assert inputs.dtype == torch.float64
    assert torch.equal(images, naive(model, 2, labels, noise=noise))
    with torch.no_grad():
        torch.testing.assert_close(model.head_to_logits(inputs), model(images, labels), rtol=1e-10, atol=1e-10)


@NOT_BUILT
@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN, PixelCNNpp])
@pytest.mark.parametrize("n,split", [(2, "share"), (9, "slices"), (1, "slices"), (3, "auto")],
                         ids=["threads-share-products", "threads-take-batch-slices", "one-thread-alone", "auto"])
def test_thread_count_does_not_change_the_images(cls, n, split, monkeypatch):
    monkeypatch.setenv("FASTGEN_SAMPLE_SPLIT", split)
    if cls is PixelCNNpp:
        model, c = make_pp(3, 256, n_classes=3), torch.arange(n) % 3
        model = model.float()
    else:
        model, c = make(cls, 1, "both", hidden_channels=48), make_cond("both", n)
    noise = draw_noise(n, model.noise_shape, generator=torch.Generator().manual_seed(7))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = cached(model, n, c, "cpp", noise=noise, return_draw_inputs=True)
        torch.set_num_threads(2)
        multi = cached(model, n, c, "cpp", noise=noise, return_draw_inputs=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], multi[0])
    if cls is not PixelCNNpp:  # float32 mixture draws may round differently from a forward pass
        assert torch.equal(multi[0], naive(model, n, c, noise=noise))
    # Threads split the sums differently: float32 rounding relative to the largest input.
    torch.testing.assert_close(single[1], multi[1], rtol=1e-4, atol=1e-5 * single[1].abs().max().item())


@NOT_BUILT
def test_a_bad_split_rule_is_refused(monkeypatch):
    model = make(PixelCNN, 1, None, hidden_channels=16)
    monkeypatch.setenv("FASTGEN_SAMPLE_SPLIT", "halves")
    with pytest.raises(ValueError, match="FASTGEN_SAMPLE_SPLIT must be auto, share or slices, got 'halves'"):
        cached(model, 2, None, "cpp", noise=draw_noise(2, model.noise_shape))


# -- PixelCNN++ -------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("channels,levels,n_classes,nr_resnet", [(3, 256, None, 1), (1, 17, 4, 1), (3, 5, 2, 2)])
def test_pixelcnnpp_draws_the_naive_samplers_images(impl, channels, levels, n_classes, nr_resnet):
    model, n = make_pp(channels, levels, n_classes=n_classes, nr_resnet=nr_resnet), 3
    noise = draw_noise(n, model.noise_shape, generator=torch.Generator().manual_seed(3))
    labels = labels_for(model, n)
    images, inputs = cached(model, n, labels, impl, noise=noise, return_draw_inputs=True)
    expected = naive(model, n, labels, noise=noise)
    assert expected.float().std() > 0.1 * levels  # varied images, not a constant
    assert torch.equal(images, expected)
    with torch.no_grad():
        torch.testing.assert_close(inputs, model(images, labels), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_pixelcnnpp_partial_completion_keeps_known_pixels(impl):
    model = make_pp(3, 256)
    start = torch.randint(0, 256, (2, 3, 8, 8))
    known = torch.zeros(8, 8, dtype=torch.bool)
    known[:3] = True
    known[5, 2:6] = True
    noise = draw_noise(2, model.noise_shape, generator=torch.Generator().manual_seed(4))
    images, _ = cached(model, 2, None, impl, noise=noise, partial=(start, known))
    assert torch.equal(images, naive(model, 2, None, noise=noise, partial=(start, known)))
    assert torch.equal(images[:, :, known], start[:, :, known])


@NOT_BUILT
def test_pixelcnnpp_float32_draws_follow_their_parameters():
    """In float32 the cached sampler's parameters differ from a forward pass by rounding, so a rare
    draw may land on the other side of a bin boundary; every draw must still be the draw of the
    forward pass's parameters at that pixel, given the image before it."""
    model = make_pp(3, 256, size=16, dtype=torch.float32, nr_filters=16)
    noise = torch.rand(2, *model.noise_shape, generator=torch.Generator().manual_seed(5))
    image = model.sample(2, noise=noise)
    redrawn = model.draw(model(image), noise)
    assert (redrawn != image).double().mean() < 0.01


def test_pixelcnnpp_same_noise_or_seed_gives_same_images_and_training_mode_is_restored():
    model = make_pp(1, 17, dtype=torch.float32).train()
    a = model.sample(2, generator=torch.Generator().manual_seed(1))
    b = model.sample(2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and model.training


# -- the op -----------------------------------------------------------------------------------------

def small_programs():
    """(name, program, image, known, noise) of each model kind, small and conditioned."""
    out = []
    for name, model, cond in [("pixelcnn", make(PixelCNN, 3, "both"), make_cond("both", 2)),
                              ("gated", make(GatedPixelCNN, 1, "class"), torch.tensor([0, 2])),
                              ("pixelcnnpp", make_pp(3, 256, n_classes=2, dtype=torch.float32), torch.tensor([0, 1]))]:
        with torch.no_grad():
            program = model.sampling_program(model.prepare_cond(cond, 2))
        image, known = partial_image(None, 2, (model.in_channels, *model.image_size), model.levels,
                                     torch.device("cpu"))
        noise = draw_noise(2, model.noise_shape, generator=torch.Generator().manual_seed(8))
        out.append((name, program, image, known, noise))
    return out


PROGRAMS = small_programs()
PROGRAM_IDS = [p[0] for p in PROGRAMS]


@NOT_BUILT
@pytest.mark.parametrize("case", PROGRAMS, ids=PROGRAM_IDS)
def test_opcheck(case):
    _, program, image, known, noise = case
    tensors, ints = program.encode()
    # Not test_aot_dispatch_dynamic: its gradient helper adds every output's sum into one tensor,
    # which fails on an int64 output followed by a float one (the op has no gradient to check).
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    for op in (torch.ops.fastgen.sample_program, torch.ops.fastgen.sample_program_block):
        for return_draw_inputs in (False, True):
            torch.library.opcheck(op, (tensors, ints, image, known, noise, return_draw_inputs), test_utils=utils)


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

    @pytest.mark.parametrize("value,dtype,match", [
        (float("nan"), torch.float64, r"finite numbers in \[0, 1\); found nan"),
        (-0.1, torch.float64, r"found -0.1"),
        (1.0, torch.float32, r"found 1.0"),
        (float("inf"), torch.float64, r"found inf"),
        (0, torch.long, "must be a floating tensor"),
        (0, torch.complex64, "must be a floating tensor"),
    ], ids=["nan", "negative", "one", "inf", "integer", "complex"])
    def test_noise_values(self, value, dtype, match):
        for model, labels in ((self.model, self.labels), (make_pp(3), None)):
            noise = torch.full((2, *model.noise_shape), value, dtype=dtype)
            with pytest.raises(ValueError, match=match):
                model.sample(2, labels, noise=noise)

    def test_noise_shape(self):
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 1, 5, 6\)"):
            self.model.sample(2, self.labels, noise=torch.rand(2, 1, W, H))
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 6, 8, 8\)"):
            make_pp(3).sample(2, noise=torch.rand(2, 3, 8, 8))

    def test_n_and_cond(self):
        for n in (0, -1, 2.0, True):
            with pytest.raises(ValueError, match="n must be a positive integer"):
                self.model.sample(n, self.labels[:0])
        with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(2,\)"):
            self.model.sample(2, torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match=r"cond map must have shape \(2, 2, 5, 6\)"):
            make(PixelCNN, cond="spatial").sample(2, torch.randn(2, 2, H, H))

    def test_direct_op_arguments(self):
        _, program, image, known, noise = PROGRAMS[1]
        with pytest.raises(ValueError, match="noise must be a float64 tensor"):
            sample_program(program, image, known, noise.float())
        with pytest.raises(ValueError, match="known must be a bool tensor"):
            sample_program(program, image, known.long(), noise)
        with pytest.raises(ValueError, match=r"image must be an int64 tensor \(N, 1, 5, 6\)"):
            sample_program(program, image[:, :, :4], known, noise)
        with pytest.raises(ValueError, match=r"image values must lie in \[0, 4\) where known"):
            sample_program(program, image + 7, torch.ones_like(known), noise)
        with pytest.raises(ValueError, match="cond 0: has 2 rows for a batch of 1"):
            sample_program(program, image[:1], known[:1], noise[:1])
