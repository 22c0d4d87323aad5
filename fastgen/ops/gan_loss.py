"""``fastgen.ops.gan_loss``: the discriminator or generator loss of a GAN from the discriminator's
outputs, forward in one pass and backward in one more.

At the sizes GANs train at (thousands of logits) the eager loss is a handful of tiny ops whose
cost is per-op overhead, in the forward and again in the autograd graph. The fused op is one
kernel each way; where fastgen._C is built its autograd node is C++ too (registered for the
Autograd key there), so a call costs one dispatch rather than a Python autograd.Function.
"""
from __future__ import annotations

import torch

from fastgen.ops._checks import check_copy_size, check_float_dtype, check_same, register_autocast
from fastgen.ops._dispatch import reference_forced, register_implementations
from fastgen.reference.gan_loss import KINDS, TARGETS, gan_loss_backward_reference, gan_loss_reference

_ops = torch.ops.fastgen
_TRITON = "fastgen.kernels.gan_loss"


# Where no compiled kernel serves a device, the reference does, behind the same checks.
def _reference_forward(d_real, d_fake, kind, generator):
    check_gan_loss_args(d_real, d_fake, kind, generator)
    return gan_loss_reference(d_real, d_fake, kind=kind, target=TARGETS[generator])


def _reference_backward(grad, d_real, d_fake, kind, generator):
    check_gan_loss_backward_args(grad, d_real, d_fake, kind, generator)
    grad_real, grad_fake = gan_loss_backward_reference(grad, None if generator else d_real, d_fake, kind=kind,
                                                       target=TARGETS[generator])
    return (d_fake.new_empty(0) if grad_real is None else grad_real.contiguous()), grad_fake.contiguous()


register_implementations("gan_loss", _reference_forward, (_TRITON, "gan_loss_triton"))
register_implementations("gan_loss_backward", _reference_backward, (_TRITON, "gan_loss_backward_triton"))


@torch.library.register_fake("fastgen::gan_loss")
def _(d_real, d_fake, kind, generator):
    check_gan_loss_args(d_real, d_fake, kind, generator)
    return d_fake.new_empty(())


@torch.library.register_fake("fastgen::gan_loss_backward")
def _(grad, d_real, d_fake, kind, generator):
    check_gan_loss_backward_args(grad, d_real, d_fake, kind, generator)
    real = torch.empty_like(d_real, memory_format=torch.contiguous_format) if d_real is not None and not generator \
        else d_fake.new_empty(0)
    return real, torch.empty_like(d_fake, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    d_real, d_fake, kind, generator = inputs
    ctx.save_for_backward(d_real, d_fake)
    ctx.args = (kind, generator)


def _backward(ctx, grad):
    d_real, d_fake = ctx.saved_tensors
    grad_real, grad_fake = _ops.gan_loss_backward(grad, d_real, d_fake, *ctx.args)
    need_real = ctx.needs_input_grad[0] and grad_real.numel() > 0
    return (grad_real if need_real else None), (grad_fake if ctx.needs_input_grad[1] else None), None, None


# The C++ extension registers a C++ autograd node for the Autograd key; without it, this one.
if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::gan_loss", "Autograd"):
    torch.library.register_autograd("fastgen::gan_loss", _backward, setup_context=_setup_context)
register_autocast("gan_loss", torch.float32)


def _check_logits(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of discriminator outputs, got {type(t).__name__}")
    check_float_dtype(name, t)
    if t.numel() == 0:
        raise ValueError(f"{name} must hold at least one discriminator output, got shape {tuple(t.shape)}")
    check_copy_size(name, t)
    return t


def check_gan_loss_args(d_real, d_fake, kind: str, generator: bool) -> None:
    """The op's arguments (``generator`` a bool; d_real is ignored by the generator losses)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _check_logits("d_fake", d_fake)
    if d_real is not None and not isinstance(d_real, torch.Tensor):
        raise TypeError(f"d_real must be a torch.Tensor or None, got {type(d_real).__name__}")
    if d_real is not None and d_real.device != d_fake.device:  # even where the loss ignores it
        raise ValueError(f"d_real is on {d_real.device} but d_fake is on {d_fake.device}; move them to one device")
    if generator:
        return
    if d_real is None:
        raise ValueError(f"d_real is required for the discriminator loss ({kind})")
    _check_logits("d_real", d_real)
    check_same("d_fake", d_fake, d_real=d_real)


def check_gan_loss_backward_args(grad, d_real, d_fake, kind: str, generator: bool) -> None:
    check_gan_loss_args(d_real, d_fake, kind, generator)
    if not isinstance(grad, torch.Tensor) or grad.numel() != 1:
        raise ValueError(f"grad must be a scalar tensor, got {grad!r:.80}")
    check_float_dtype("grad", grad)
    if grad.device != d_fake.device:
        raise ValueError(f"grad is on {grad.device} but d_fake is on {d_fake.device}; move them to one device")


def gan_loss(d_real: torch.Tensor | None, d_fake: torch.Tensor, *, kind: str,
             target: str = "discriminator") -> torch.Tensor:
    """The mean GAN loss of the discriminator or the generator (table in ``fastgen.reference.gan_loss``).

    Args:
        d_real: discriminator logits (critic scores) on real images, any shape; may be None when
            ``target="generator"`` (no generator loss reads it).
        d_fake: the same on generated images.
        kind: ``"minimax"``, ``"non_saturating"``, ``"lsgan"``, ``"hinge"`` or ``"wasserstein"``.
        target: ``"discriminator"`` or ``"generator"``.

    Returns:
        A scalar tensor.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    generator = target == "generator"
    _check_logits("d_fake", d_fake)
    if generator:
        d_real = None
    elif d_real is None:
        raise ValueError(f"d_real is required for the discriminator loss ({kind})")
    else:
        _check_logits("d_real", d_real)
        if d_real.dtype != d_fake.dtype or d_real.device != d_fake.device:  # the common case skips check_same
            check_same("d_fake", d_fake, d_real=d_real)
    if reference_forced():
        return gan_loss_reference(d_real, d_fake, kind=kind, target=target)
    return _ops.gan_loss.default(d_real, d_fake, kind, generator)  # .default: no overload lookup per call
