"""fastgen.interop.load_pixelcnnpp and `fastgen convert`: weights laid out as the two reference codes
lay them out (built by tests/pixelcnnpp_sources.py, which documents both layouts and re-implements
both forwards independently of fastgen) give a fastgen PixelCNNpp with the same outputs, every
tensor used, and every mismatch named."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgen.cli import main
from fastgen.interop import ConversionError, load_pixelcnnpp, read_tf_checkpoint
from fastgen.sampling import draw_noise, naive_sample
from tests.pixelcnnpp_sources import openai_forward, openai_variables, pclucas14_forward, pclucas14_state_dict
from tests.test_tf_checkpoint import Spec, write_bundle

SIZES = dict(nr_resnet=2, nr_filters=8, nr_mix=3)
FIXTURE = Path(__file__).parent / "data" / "openai_pixelcnnpp"


def images(channels: int, size: int = 8, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed))


def as_source_input(x: torch.Tensor) -> torch.Tensor:
    """What both codes feed their network: 8-bit levels rescaled to [-1, 1], in float64 here."""
    return x.double() * (2 / 255) - 1


def double(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


# -- pclucas14 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [3, 1])
def test_pclucas14_outputs_equal_the_source(channels):
    state = pclucas14_state_dict(**SIZES, in_channels=channels, seed=1)
    model = load_pixelcnnpp(state, source="pclucas14", image_size=8)
    assert not model.training
    assert {k: model.config()[k] for k in ("in_channels", "nr_resnet", "nr_filters", "nr_mix", "weight_norm")} == \
        dict(in_channels=channels, **SIZES, weight_norm=True)
    x = images(channels)
    want = pclucas14_forward(double(state), as_source_input(x))
    assert relative_error(model(x), want) < 1e-5  # float32 model against the float64 source
    # g and v are copied as they are, so in float64 the two agree to float64 rounding.
    assert relative_error(model.double()(x), want) < 1e-12


def test_pclucas14_file_and_data_parallel_prefix(tmp_path):
    state = pclucas14_state_dict(1, 4, 2, seed=2)
    path = tmp_path / "pcnn.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # saved from nn.DataParallel
    model = load_pixelcnnpp(path, source="pclucas14", image_size=8)
    x = images(3)
    assert relative_error(model(x), pclucas14_forward(double(state), as_source_input(x))) < 1e-5


def test_pclucas14_every_tensor_is_checked():
    state = pclucas14_state_dict(1, 4, 2, seed=3)
    name = "down_layers.1.ul_stream.1.nin_skip.lin_a.weight_v"
    with pytest.raises(ConversionError, match=f"{name} is missing"):
        load_pixelcnnpp({k: v for k, v in state.items() if k != name}, source="pclucas14", image_size=8)
    with pytest.raises(ConversionError, match=rf"{name} has shape \[4, 15\], expected \[4, 16\]"):
        load_pixelcnnpp({**state, name: state[name][:, :15]}, source="pclucas14", image_size=8)
    with pytest.raises(ConversionError, match="up_layers.0.u_stream.0.extra not used"):
        load_pixelcnnpp({**state, "up_layers.0.u_stream.0.extra": torch.ones(1)}, source="pclucas14", image_size=8)
    bad = state["nin_out.lin_a.bias"].clone()
    bad[0] = float("nan")
    with pytest.raises(ConversionError, match="nin_out.lin_a.bias holds NaN"):
        load_pixelcnnpp({**state, "nin_out.lin_a.bias": bad}, source="pclucas14", image_size=8)
    with pytest.raises(ConversionError, match="must be a floating-point tensor"):
        load_pixelcnnpp({**state, "u_init.conv.bias": state["u_init.conv.bias"].long()}, source="pclucas14",
                        image_size=8)
    # A wider output layer than a mixture has: 20 + 1 channels is no whole number of components.
    head = "nin_out.lin_a.weight_v"
    with pytest.raises(ConversionError, match="21 channels, expected a multiple of 10"):
        load_pixelcnnpp({**state, head: torch.ones(21, 4)}, source="pclucas14", image_size=8)
    with pytest.raises(ConversionError, match="not a pclucas14 PixelCNN\\+\\+ state_dict"):
        load_pixelcnnpp({"weight": torch.ones(3)}, source="pclucas14")
    with pytest.raises(ConversionError, match="not a pclucas14 PixelCNN\\+\\+ state_dict"):
        load_pixelcnnpp({**state, "u_init.conv.weight_v": [1.0, 2.0]}, source="pclucas14")
    with pytest.raises(ConversionError, match="u_init.conv.bias must be a floating-point tensor, got list"):
        load_pixelcnnpp({**state, "u_init.conv.bias": [1.0, 2.0]}, source="pclucas14", image_size=8)


def test_bad_arguments_and_files(tmp_path):
    state = pclucas14_state_dict(1, 4, 2)
    with pytest.raises(ValueError, match="source must be one of pclucas14, openai"):
        load_pixelcnnpp(state, source="tf")
    with pytest.raises(ValueError, match="ema applies to source='openai' only"):
        load_pixelcnnpp(state, ema=True)
    with pytest.raises(TypeError, match="weights must be a path or a mapping"):
        load_pixelcnnpp(42)
    with pytest.raises(ValueError, match="image_size must have height and width divisible by 4"):
        load_pixelcnnpp(state, image_size=10)
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ConversionError, match="junk.pth: not a torch state_dict file that loads without running code"):
        load_pixelcnnpp(tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="holds a list, expected a state_dict"):
        load_pixelcnnpp(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError):
        load_pixelcnnpp(tmp_path / "missing.pth")
    torch.save(state, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:5000])
    with pytest.raises(ConversionError, match="cut.pth: not a"):
        load_pixelcnnpp(tmp_path / "cut.pth")


# -- openai ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels, n_classes", [(3, None), (3, 4), (1, 4)])
def test_openai_outputs_equal_the_source(channels, n_classes):
    variables = openai_variables(**SIZES, in_channels=channels, n_classes=n_classes, seed=4, ema=True)
    x = images(channels)
    labels = torch.tensor([1, 3]) if n_classes else None
    for ema in (None, True, False):
        model = load_pixelcnnpp(variables, source="openai", image_size=8, ema=ema)
        assert model.n_classes == n_classes
        want = openai_forward(double(variables), as_source_input(x), labels, ema=ema is not False)
        assert relative_error(model(x, labels), want) < 1e-5
        assert relative_error(model.double()(x, labels), want) < 1e-6  # the folded deconvs are rounded to float32


def test_openai_checkpoint_file(tmp_path):
    variables = openai_variables(1, 4, 2, seed=5, ema=True)
    write_bundle(tmp_path / "params.ckpt", [Spec(name, tensor) for name, tensor in variables.items()])
    model = load_pixelcnnpp(tmp_path / "params.ckpt", source="openai", image_size=8)
    x = images(3)
    assert relative_error(model(x), openai_forward(double(variables), as_source_input(x), ema=True)) < 1e-5


def test_openai_every_variable_is_checked():
    variables = openai_variables(1, 4, 2, seed=6)
    name = "model/dense_3/V"
    with pytest.raises(ConversionError, match=f"{name} is missing"):
        load_pixelcnnpp({k: v for k, v in variables.items() if k != name}, source="openai", image_size=8)
    with pytest.raises(ConversionError, match=rf"{name} has shape \[8, 5\], expected \[8, 4\]"):
        load_pixelcnnpp({**variables, name: torch.ones(8, 5)}, source="openai", image_size=8)
    with pytest.raises(ConversionError, match="model/deconv2d_4/V not used"):
        load_pixelcnnpp({**variables, "model/deconv2d_4/V": torch.ones(2, 3, 4, 4)}, source="openai", image_size=8)
    extra_conv = {**variables, "model/conv2d_39/V": torch.ones(2, 3, 4, 4)}
    with pytest.raises(ConversionError, match="40 convolutions .* 24 nr_resnet \\+ 15"):
        load_pixelcnnpp(extra_conv, source="openai", image_size=8)
    with pytest.raises(ConversionError, match="ExponentialMovingAverage is missing"):
        load_pixelcnnpp(variables, source="openai", ema=True)
    with pytest.raises(ConversionError, match="not an openai/pixel-cnn checkpoint"):
        load_pixelcnnpp({"global_step": torch.tensor(1)}, source="openai")
    with pytest.raises(ConversionError, match="not an openai/pixel-cnn PixelCNN"):
        load_pixelcnnpp({**variables, "model/conv2d_0/V": [1.0]}, source="openai")
    with pytest.raises(ConversionError, match="model/dense_0/g must be a floating-point tensor, got list"):
        load_pixelcnnpp({**variables, "model/dense_0/g": [1.0]}, source="openai", image_size=8)


@pytest.mark.skipif(not (FIXTURE / "tiny.ckpt.index").exists(), reason="the TensorFlow-written fixture is absent")
def test_a_checkpoint_written_by_tensorflow():
    """A checkpoint that TensorFlow itself wrote (tests/data/openai_pixelcnnpp/README.md), with the
    outputs TensorFlow computed from it: the reader and the converter on a genuine file."""
    expected = np.load(FIXTURE / "expected.npz")
    x, labels = torch.from_numpy(expected["levels_nchw"]), torch.from_numpy(expected["labels"])
    assert "model/conv2d_0/V" in read_tf_checkpoint(FIXTURE / "tiny.ckpt")
    for ema, key in ((None, "out_ema"), (False, "out_raw")):
        model = load_pixelcnnpp(FIXTURE / "tiny.ckpt", source="openai", image_size=x.shape[-1], ema=ema)
        got = model(x, labels).permute(0, 2, 3, 1)  # TensorFlow's output is channels-last
        assert relative_error(got, torch.from_numpy(expected[key])) < 1e-5, key


# -- the converted model as a fastgen model ------------------------------------------------------------
def test_converted_model_samples_as_its_naive_loop():
    model = load_pixelcnnpp(openai_variables(1, 4, 2, n_classes=3, seed=7), source="openai", image_size=8)
    labels = torch.tensor([0, 2])
    noise = draw_noise(2, model.noise_shape, generator=torch.Generator().manual_seed(0))
    cached = model.sample(2, labels, noise=noise)
    start = torch.zeros(2, 3, 8, 8, dtype=torch.long)
    naive = naive_sample(model, model.prepare_cond(labels, 2), start, torch.zeros_like(start, dtype=torch.bool), noise)
    assert torch.equal(cached, naive)


def test_convert_command(tmp_path, capsys):
    weights = tmp_path / "pcnn.pth"
    state = pclucas14_state_dict(1, 4, 2, seed=8)
    torch.save(state, weights)
    out = str(tmp_path / "converted")
    assert main(["convert", str(weights), "-o", out, "--source", "pclucas14", "--image-size", "8"]) == 0
    assert "nr_resnet 1, nr_filters 4, nr_mix 2, 3 channels" in capsys.readouterr().out
    import fastgen

    model = fastgen.load(out).eval()  # dropout off, as in the source's evaluation
    x = images(3)
    assert relative_error(model(x), pclucas14_forward(double(state), as_source_input(x))) < 1e-5
    assert main(["sample", out, "-n", "2", "-o", str(tmp_path / "grid.png")]) == 0
    np.savez(tmp_path / "test.npz", images=images(3, n=4).permute(0, 2, 3, 1).numpy().astype(np.uint8))
    assert main(["eval", out, "--data", f"npz:{tmp_path / 'test.npz'}", "--split", "train"]) == 0
    assert "bits/dim" in capsys.readouterr().out

    def refused(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("fastgen: error: ") and err.count("\n") == 1, err
        return err

    again = ["convert", str(weights), "-o", out, "--source", "pclucas14", "--image-size", "8"]
    assert "a checkpoint is there; --overwrite replaces it" in refused(again)
    assert main([*again, "--overwrite"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert "not a fastgen checkpoint" in refused(["convert", str(weights), "-o", str(tmp_path / "mine"),
                                                  "--source", "pclucas14", "--overwrite"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert "is a file" in refused(["convert", str(weights), "-o", str(weights), "--source", "pclucas14"])
    assert "is a file, not a directory" in refused(["convert", str(weights), "-o", str(weights / "sub"),
                                                    "--source", "pclucas14"])
    assert "--no-ema applies to --source openai" in refused(["convert", str(weights), "-o", str(tmp_path / "n"),
                                                              "--source", "pclucas14", "--no-ema"])
    assert "No such file" in refused(["convert", str(tmp_path / "none.pth"), "-o", str(tmp_path / "n"),
                                      "--source", "pclucas14"])
    assert "none.ckpt.index: TensorFlow checkpoint index not found" in refused(
        ["convert", str(tmp_path / "none.ckpt"), "-o", str(tmp_path / "n"), "--source", "openai"])
    assert "divisible by 4" in refused(["convert", str(weights), "-o", str(tmp_path / "n"), "--source", "pclucas14",
                                        "--image-size", "10"])
    assert not os.path.exists(tmp_path / "n")


def test_sizes_that_the_tensors_do_not_back_are_refused_before_allocating():
    state = pclucas14_state_dict(1, 4, 2, seed=9)
    huge = {**state, "u_init.conv.weight_v": torch.ones(40_000, 4, 2, 3)}  # would mean nr_filters 40000: ~77 GB
    with pytest.raises(ConversionError, match=r"describe a network of .* parameters \(nr_filters 40000"):
        load_pixelcnnpp(huge, source="pclucas14", image_size=8)


def test_convert_replaces_only_intact_checkpoints(tmp_path, capsys):
    weights = tmp_path / "pcnn.pth"
    torch.save(pclucas14_state_dict(1, 4, 2, seed=10), weights)
    convert = ["convert", str(weights), "--source", "pclucas14", "--image-size", "8", "--overwrite"]
    foreign = tmp_path / "hf"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert"}')  # another library's config.json
    (foreign / "weights.bin").write_text("keep")
    notes = tmp_path / "notes.old"  # beside the output: what an interrupted replacement would leave, but not one
    notes.mkdir()
    (notes / "a.txt").write_text("keep")
    for out in (foreign, tmp_path / "notes"):
        capsys.readouterr()
        assert main([*convert, "-o", str(out)]) == 2
        assert "is a directory that is not a fastgen checkpoint" in capsys.readouterr().err
    assert (foreign / "weights.bin").read_text() == "keep" and (notes / "a.txt").read_text() == "keep"
