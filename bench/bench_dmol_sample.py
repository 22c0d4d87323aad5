"""dmol_sample: fastgen vs the eager PixelCNN++ sampler vs torch.compile of it (forward only)."""
from __future__ import annotations

import fastgen
from bench.bench_dmol_nll import FULL, QUICK, make_dmol_inputs
from bench.harness import Case
from fastgen.reference.dmol import dmol_sample_reference


def _sample_case(n, c, h, w, nr_mix) -> Case:
    def make_inputs(device):
        _, params, noise = make_dmol_inputs(n, c, h, w, nr_mix, device)
        return (), {"params": params, "noise": noise, "nr_mix": nr_mix}

    return Case(
        op="dmol_sample",
        shape=f"{n}x{c}x{h}x{w} nr_mix={nr_mix}",
        make_inputs=make_inputs,
        fastgen=lambda params, noise, nr_mix: fastgen.ops.dmol_sample(params, nr_mix=nr_mix, noise=noise),
        reference=lambda params, noise, nr_mix: dmol_sample_reference(params, nr_mix, noise),
        modes=("fwd",),
    )


def cases(quick: bool = False) -> list[Case]:
    return [_sample_case(*s) for s in (QUICK if quick else FULL)]
