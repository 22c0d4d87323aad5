"""``fastgen.ops.sample_program``: cached incremental sampling of a sampling program.

Models build their program (``fastgen.program``) and the driver (``fastgen.sampling.sample``)
calls this op. On the CPU the C++ interpreter (csrc/cpu/sample_program.cpp) runs the whole loop
over rows, pixels and colours, every node and the draw, in one call; on CUDA the block
interpreter (csrc/cuda/sample_program_block.cuh) does, one thread block per image. Without a
compiled kernel the reference interpreter (fastgen/reference/sample_program.py) runs the same
algorithm with eager PyTorch ops.
"""
from __future__ import annotations

import torch

from fastgen._core import check_uniform_noise
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.program import SamplingProgram
from fastgen.reference.sample_program import sample_program_reference

_ops = torch.ops.fastgen


def _block_reference(tensors, ints, image, known, noise, return_draw_inputs):
    raise NotImplementedError("fastgen::sample_program_block runs only as a compiled kernel (fastgen._C); "
                              "use fastgen.ops.sample_program")


def _describe_reference(tensors, ints):
    return SamplingProgram.decode(tensors, ints).describe()


register_implementations("sample_program", sample_program_reference)
register_implementations("sample_program_block", _block_reference)
register_implementations("sample_program_describe", _describe_reference)


def _fake(tensors, ints, image, known, noise, return_draw_inputs):
    program = SamplingProgram.decode(tensors, ints)
    n, _, h, w = image.shape
    draw = image.new_empty((n, program.draw_channels(), h, w) if return_draw_inputs else (0,),
                           dtype=tensors[0].dtype)
    return torch.empty_like(image), draw


torch.library.register_fake("fastgen::sample_program")(_fake)
torch.library.register_fake("fastgen::sample_program_block")(_fake)


def check_sample_args(program: SamplingProgram, image: torch.Tensor, known: torch.Tensor,
                      noise: torch.Tensor) -> None:
    """Raise a ValueError naming the offending argument; used before any kernel runs."""
    if not isinstance(program, SamplingProgram):
        raise TypeError(f"program must be a fastgen.program.SamplingProgram, got {type(program).__name__}")
    want = (program.image_channels, program.height, program.width)
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.dtype != torch.int64 \
            or tuple(image.shape[1:]) != want:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be an int64 tensor (N, {want[0]}, {want[1]}, {want[2]}), got {got}")
    if image.shape[0] < 1:
        raise ValueError("image must hold at least one image")
    program.check(batch=image.shape[0], weights=False)
    if not isinstance(known, torch.Tensor) or known.dtype != torch.bool or known.shape != image.shape:
        got = f"{known.dtype} {tuple(known.shape)}" if isinstance(known, torch.Tensor) else type(known).__name__
        raise ValueError(f"known must be a bool tensor of the image's shape {tuple(image.shape)}, got {got}")
    if isinstance(noise, torch.Tensor) and noise.dtype != torch.float64:
        raise ValueError(f"noise must be a float64 tensor, got {noise.dtype}")
    check_uniform_noise(noise, (image.shape[0], program.noise_channels(), program.height, program.width))
    for name, t in (("image", image), ("known", known), ("noise", noise)):
        if t.device != program.device:
            raise ValueError(f"{name} is on {t.device} but the program's weights are on {program.device}")
    kept = image[known]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= program.levels):
        raise ValueError(f"image values must lie in [0, {program.levels}) where known")


def sample_program(program: SamplingProgram, image: torch.Tensor, known: torch.Tensor, noise: torch.Tensor,
                   return_draw_inputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``program``: (images (N, C, H, W) filled where ``known`` is False, the draw's inputs at
    every pixel (N, K, H, W) when ``return_draw_inputs``, else an empty tensor)."""
    check_sample_args(program, image, known, noise)
    tensors, ints = program.encode()
    if reference_forced():
        return sample_program_reference(tensors, ints, image, known, noise, return_draw_inputs)
    return _ops.sample_program(tensors, ints, image, known, noise, bool(return_draw_inputs))
