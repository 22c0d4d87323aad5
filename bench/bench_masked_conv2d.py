"""masked_conv2d: fastgen vs F.conv2d with the masked weight (reference) vs torch.compile of it."""
from __future__ import annotations

import torch

import fastgen
from bench.harness import Case
from fastgen.reference import masked_conv2d_reference

# (N, C_in, C_out, H, W, k, mask_type, color_groups)
FULL = [
    (16, 128, 128, 28, 28, 7, "A", 1),
    (16, 128, 128, 28, 28, 3, "B", 1),
    (16, 120, 120, 32, 32, 3, "B", 3),
    (64, 64, 64, 28, 28, 3, "B", 1),
]
QUICK = [(2, 8, 8, 7, 9, 3, "B", 1), (2, 6, 6, 5, 5, 7, "A", 3)]


def _case(n, cin, cout, h, w, k, mask_type, groups) -> Case:
    def make_inputs(device):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cin, h, w, generator=g).to(device)
        weight = (torch.randn(cout, cin, k, k, generator=g) / (cin * k) ** 0.5).to(device)
        bias = torch.randn(cout, generator=g).to(device)
        return (x, weight, bias), {"mask_type": mask_type, "color_groups": groups}

    return Case(
        op="masked_conv2d",
        shape=f"{n}x{cin}x{h}x{w} k{k}{mask_type} c{cout} g{groups}",
        make_inputs=make_inputs,
        fastgen=fastgen.ops.masked_conv2d,
        reference=masked_conv2d_reference,
    )


def cases(quick: bool = False) -> list[Case]:
    return [_case(*c) for c in (QUICK if quick else FULL)]
