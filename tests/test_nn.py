"""fastgen.nn modules."""
import pytest
import torch

from fastgen.nn import GatedActivation, MaskedConv2d
from fastgen.reference import causal_mask, gated_activation_reference, masked_conv2d_reference


def test_masked_conv2d_module_matches_reference_and_trains():
    layer = MaskedConv2d(6, 9, 5, "A", color_groups=3)
    x = torch.randn(2, 6, 7, 8)
    y = layer(x)
    assert y.shape == (2, 9, 7, 8)
    torch.testing.assert_close(y, masked_conv2d_reference(x, layer.weight, layer.bias, mask_type="A", color_groups=3))
    y.square().mean().backward()
    mask = causal_mask(9, 6, 5, "A", 3).bool()
    assert torch.count_nonzero(layer.weight.grad[~mask]) == 0
    assert torch.count_nonzero(layer.weight.grad[mask]) > 0
    assert "mask_type='A'" in repr(layer)


def test_masked_conv2d_module_without_bias_and_state_dict():
    layer = MaskedConv2d(4, 4, 3, "B", bias=False)
    assert layer.bias is None and set(layer.state_dict()) == {"weight"}


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=4), "kernel_size must be odd"),
    (dict(mask_type="X"), "mask_type must be 'A' or 'B'"),
    (dict(color_groups=4), "color_groups=4 must divide"),
])
def test_masked_conv2d_module_rejects_bad_config(kwargs, match):
    config = dict(in_channels=6, out_channels=6, kernel_size=3, mask_type="A", color_groups=3) | kwargs
    with pytest.raises(ValueError, match=match):
        MaskedConv2d(**config)


def test_gated_activation_module():
    x, cond = torch.randn(2, 8, 3, 5), torch.randn(2, 8)
    torch.testing.assert_close(GatedActivation()(x, cond), gated_activation_reference(x, cond))


def test_modules_compile_to_one_graph():
    """The ops trace through torch.compile without graph breaks, forward and backward."""
    layer = MaskedConv2d(6, 12, 3, "A", color_groups=3)
    gate = GatedActivation()
    compiled = torch.compile(lambda x: gate(layer(x)), fullgraph=True)
    x = torch.randn(2, 6, 8, 9, requires_grad=True)
    y = compiled(x)
    expected = gated_activation_reference(
        masked_conv2d_reference(x, layer.weight, layer.bias, mask_type="A", color_groups=3))
    torch.testing.assert_close(y, expected)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    (want,) = torch.autograd.grad(expected.sum(), (x,))
    torch.testing.assert_close(gx, want)
