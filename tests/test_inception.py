"""The FID Inception network against torch-fidelity's, with random weights (nothing is downloaded).

torch-fidelity and pytorch-fid are installed as test references and imported through
tests/peer_metrics.py (a torchvision stub stands in while they are imported).
pytorch-fid builds its network from torchvision's blocks, so only its weight layout is tested.
InceptionV3 at 299x299 costs about a second per image on 2 cores: batches stay at two images.
"""
from __future__ import annotations

import importlib
import pickle

import pytest
import torch

from tests.peer_metrics import peer
from fastgen.metrics.inception import WEIGHTS_ENV, InceptionV3FID, load_inception, resize_bilinear_tf1


fidelity = peer("torch_fidelity.feature_extractor_inceptionv3")
fidelity_resize = importlib.import_module("torch_fidelity.interpolate_compat_tensorflow")


def _random_weights() -> dict[str, torch.Tensor]:
    """torch-fidelity's layout (no batch-norm counters) with random values at a scale that keeps
    the activations of all 94 layers of order one, so that the comparison means something."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for key, like in InceptionV3FID().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            value = torch.randn(like.shape, generator=g) * (2.0 / like[0].numel()) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            value = torch.rand(like.shape, generator=g) + 0.5  # positive variances
        elif key.endswith(("bn.bias", "running_mean")):
            value = torch.randn(like.shape, generator=g) * 0.1
        elif key == "fc.weight":
            value = torch.randn(like.shape, generator=g) / 2048 ** 0.5
        else:
            value = torch.randn(like.shape, generator=g)
        state[key] = value
    return state


@pytest.fixture(scope="module")
def weights():
    return _random_weights()


@pytest.fixture(scope="module")
def fidelity_file(weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(weights, path)
    return str(path)


@pytest.fixture(scope="module")
def network(fidelity_file):
    return load_inception(fidelity_file)


@pytest.fixture(scope="module")
def images():
    """uint8 images of an odd size: one in colour, one grey (the same plane in all 3 channels)."""
    g = torch.Generator().manual_seed(2)
    u = torch.randint(0, 256, (2, 3, 37, 45), dtype=torch.uint8, generator=g)
    u[1] = u[1, :1]
    return u


@pytest.fixture(scope="module")
def reference(fidelity_file, images):
    """torch-fidelity's (pool features, IS logits, full logits) of ``images``."""
    extractor = fidelity.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased", "logits"], feature_extractor_weights_path=fidelity_file)
    with torch.no_grad():
        return extractor(images)


def _assert_close_scaled(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_properties(network):
    assert (network.name, network.feature_dim, network.n_classes) == ("inception-v3-fid", 2048, 1008)
    assert network.channels == (1, 3) and network.image_size is None
    assert not network.training and not any(m.training for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())


def test_matches_torch_fidelity(network, images, reference):
    features_ref, logits_ref, full_logits_ref = reference
    # random weights that kill or blow up the activations would make the comparison empty
    assert 0.1 < features_ref.std() < 100 and (features_ref > 0).float().mean() > 0.3
    with torch.no_grad():
        features, logits = network(images.float() / 255)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert features.dtype == logits.dtype == torch.float32
    _assert_close_scaled(features, features_ref)
    _assert_close_scaled(logits, logits_ref)  # without the bias, as the Inception Score reads them
    _assert_close_scaled(logits + network.fc.bias, full_logits_ref)


def test_grey_is_repeated(network, images, reference):
    with torch.no_grad():
        features, logits = network(images[1:, :1].double() / 255)  # float64 input is accepted too
    _assert_close_scaled(features, reference[0][1:])
    _assert_close_scaled(logits, reference[1][1:])


@pytest.mark.parametrize("size", [(37, 45), (8, 300), (299, 299), (512, 333)])
def test_resize_matches_torch_fidelity(size):
    x = torch.rand(2, 2, *size) * 255
    expected = fidelity_resize.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    torch.testing.assert_close(resize_bilinear_tf1(x, 299), expected, rtol=1e-6, atol=1e-4)


def test_resize_is_tensorflow_not_half_pixel():
    # TF 1.x samples input i * in / out: a 2x upsampling repeats each pixel's value at even
    # outputs and clamps the last output to the last pixel (half-pixel centres would not).
    x = torch.tensor([[[[0.0, 10.0, 20.0]]]]).expand(1, 1, 3, 3)
    out = resize_bilinear_tf1(x, 6)
    assert out[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0, 20.0]


def _to_pytorch_fid_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pytorch-fid's file is a torchvision Inception3 state dict: the same names as torch-fidelity's
    conversion of the TF graph, plus a num_batches_tracked counter after each batch norm's tensors
    (pytorch-fid issue #34 lists them as "Unexpected key(s)" under torch 0.4.0)."""
    out = {}
    for key, value in state.items():
        out[key] = value
        if key.endswith(".bn.running_var"):
            out[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return out


def _assert_same_weights(model, weights):
    own = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(own[key], value), key


def test_pytorch_fid_layout(weights, tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    # pytorch-fid's file predates the zip format; torch.load(weights_only=True) reads both
    torch.save(_to_pytorch_fid_layout(weights), path, _use_new_zipfile_serialization=False)
    _assert_same_weights(load_inception(str(path)), weights)


@pytest.mark.parametrize("layout", ["torch-fidelity", "pytorch-fid"])
def test_safetensors(weights, tmp_path, layout):
    from safetensors.torch import save_file
    state = weights if layout == "torch-fidelity" else _to_pytorch_fid_layout(weights)
    path = tmp_path / "inception.safetensors"
    save_file(state, str(path))
    _assert_same_weights(load_inception(str(path)), weights)


def test_environment_variable(fidelity_file, weights, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, fidelity_file)
    _assert_same_weights(load_inception(), weights)


def test_no_weights_says_how_to_give_them(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(ValueError) as error:
        load_inception()
    message = str(error.value)
    assert "--inception-weights" in message and WEIGHTS_ENV in message
    # the file names are the ones the two packages download
    pytorch_fid = peer("pytorch_fid.inception")
    for url in (fidelity.URL_INCEPTION_V3, pytorch_fid.FID_WEIGHTS_URL):
        assert url.rsplit("/", 1)[1] in message


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere.pth")
    with pytest.raises(ValueError, match="nowhere.pth: no such file"):
        load_inception(path)


def test_wrong_keys(weights, tmp_path):
    state = dict(weights)
    del state["Mixed_6c.branch7x7_2.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(3)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_inception(str(path))
    message = str(error.value)
    assert str(path) in message
    assert "missing Mixed_6c.branch7x7_2.conv.weight" in message and "unexpected AuxLogits.fc.weight" in message


def test_other_network_lists_a_few_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(10)}, path)
    with pytest.raises(ValueError, match=r"resnet.pth: .*unexpected layer0.weight, .*\(10 in all\)"):
        load_inception(str(path))


def test_wrong_shape(weights, tmp_path):
    state = dict(weights, **{"Mixed_7b.branch3x3_2a.conv.weight": torch.zeros(384, 384, 3, 1)})
    path = tmp_path / "transposed.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"transposed.pth: Mixed_7b.branch3x3_2a.conv.weight has shape "
                                         r"\(384, 384, 3, 1\), expected \(384, 384, 1, 3\)"):
        load_inception(str(path))


class _NotWeights:
    pass


@pytest.mark.parametrize("content, problem", [
    (b"\x00garbage bytes, not a pickle", "not a readable weights file"),
    (pickle.dumps(_NotWeights(), protocol=2), "not a readable weights file"),  # refused by weights_only
    ("list", "not a state dict"),
    ("dict of ints", "not a state dict"),
], ids=["garbage", "object-pickle", "list", "dict-of-ints"])
def test_not_a_state_dict(tmp_path, content, problem):
    path = tmp_path / "bad.pth"
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "dict of ints":
        torch.save({"fc.weight": 1}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"bad.pth: {problem}"):
        load_inception(str(path))


def test_garbage_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="bad.safetensors: not a readable weights file"):
        load_inception(str(path))


@pytest.mark.parametrize("images, problem", [
    (torch.full((1, 3, 20, 20), 1.5), r"in \[0, 1\]"),
    (torch.rand(1, 2, 20, 20), "1 or 3 channels"),
    (torch.randint(0, 255, (1, 3, 20, 20), dtype=torch.uint8), "floats in"),
    (torch.rand(3, 20, 20), r"\(N, C, H, W\)"),
])
def test_bad_images(network, images, problem):
    with pytest.raises(ValueError, match=problem):
        network(images)



def test_loading_leaves_the_global_random_state_alone(fidelity_file):
    # Training runs load the network at their start; their dropout and noise draw from this state.
    state = torch.get_rng_state()
    load_inception(fidelity_file)
    assert torch.equal(torch.get_rng_state(), state)
