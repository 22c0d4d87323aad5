"""fastgen.latent: interpolation, traversals, the manifold grid, vector arithmetic."""
from __future__ import annotations

import pytest
import torch

from fastgen.latent import interpolate, manifold_grid, traversal, vector_arithmetic


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolation_ends_at_both_latents(method):
    z0, z1 = torch.randn(2, 6), torch.randn(2, 6)
    path = interpolate(z0, z1, 5, method=method)
    assert path.shape == (5, 2, 6)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)


def test_slerp_follows_the_arc_and_interpolates_the_norm():
    z0, z1 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])
    mid = interpolate(z0, z1, 3, method="slerp")[1]
    torch.testing.assert_close(mid, torch.tensor([3.0, 3.0]) / 2 ** 0.5)  # 45 degrees, norm 3
    torch.testing.assert_close(interpolate(z0, 2 * z0, 3, method="slerp")[1], 1.5 * z0)  # parallel: lerp


def test_traversal_varies_one_dimension_per_row():
    z = torch.randn(4)
    values = torch.tensor([-1.0, 0.0, 2.0])
    grid = traversal(z, values, dims=[1, 3]).view(2, 3, 4)
    torch.testing.assert_close(grid[0, :, 1], values)
    torch.testing.assert_close(grid[1, :, 3], values)
    torch.testing.assert_close(grid[0, :, [0, 2, 3]], z[[0, 2, 3]].expand(3, 3))
    assert traversal(z).shape == (4 * 9, 4)


def test_manifold_grid_sits_at_normal_quantiles():
    grid = manifold_grid(5).view(5, 5, 2)
    q = torch.distributions.Normal(0, 1).icdf(torch.linspace(0.05, 0.95, 5))
    torch.testing.assert_close(grid[0, :, 0], q)  # first coordinate along a row
    torch.testing.assert_close(grid[:, 0, 1], q.flip(0))  # second down the columns, top = high


def test_vector_arithmetic_is_a_difference_of_means():
    a, b, c = torch.randn(3, 5), torch.randn(4, 5), torch.randn(2, 5)
    torch.testing.assert_close(vector_arithmetic(a, b, c), a.mean(0) - b.mean(0) + c.mean(0))


@pytest.mark.parametrize("call,match", [
    (lambda: interpolate(torch.zeros(3), torch.zeros(4), 3), "one shape"),
    (lambda: interpolate(torch.zeros(3), torch.zeros(3), 1), "steps must be an integer >= 2"),
    (lambda: interpolate(torch.zeros(3), torch.zeros(3), 3, method="cubic"), "method must be one of"),
    (lambda: interpolate(torch.zeros(3, dtype=torch.long), torch.zeros(3), 3), "z0 must be a floating-point"),
    (lambda: traversal(torch.zeros(2, 3)), r"z must be one latent \(D,\)"),
    (lambda: traversal(torch.zeros(3), dims=[3]), "dims must index"),
    (lambda: manifold_grid(1), "n must be an integer >= 2"),
    (lambda: manifold_grid(4, low=0.0), "0 < low < high < 1"),
    (lambda: vector_arithmetic(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3)), "one latent size"),
    (lambda: interpolate(torch.full((3,), float("nan")), torch.zeros(3), 3), "z0 holds NaN or infinite values"),
    (lambda: traversal(torch.zeros(3), values=torch.tensor([0.0, float("inf")])), "values must be a non-empty 1-D"),
    (lambda: traversal(torch.zeros(3), dims=[1.5]), "dims must index"),
    (lambda: manifold_grid(4, low=float("nan")), "0 < low < high < 1"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_2d_vae_decodes_its_manifold_grid():
    from fastgen.models import VAE

    vae = VAE(1, 17, 8, latent_dim=2, likelihood="logistic", hidden=16)
    images = vae.generate(manifold_grid(6))
    assert images.shape == (36, 1, 8, 8) and images.min() >= 0 and images.max() < 17
