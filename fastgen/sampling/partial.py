"""``partial_image``: the checks and the start image of completion (``sample(..., partial=(image, known))``)."""
from __future__ import annotations

import torch


def partial_image(partial: tuple[torch.Tensor, torch.Tensor] | None, n: int, shape: tuple[int, int, int], levels: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``partial = (image, known)`` and return (start image int64, known mask bool), both
    (n, C, H, W). ``known`` may also be (n, 1, H, W), (n, H, W) or (H, W): it is broadcast."""
    image = torch.zeros((n, *shape), dtype=torch.long, device=device)
    known = torch.zeros((n, *shape), dtype=torch.bool, device=device)
    if partial is None:
        return image, known
    if not (isinstance(partial, (tuple, list)) and len(partial) == 2):
        raise TypeError("partial must be a pair (image, known): image (n, C, H, W) of levels and a boolean mask "
                        "of the pixels to keep")
    given, mask = partial
    if not isinstance(given, torch.Tensor) or tuple(given.shape) != (n, *shape):
        got = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        raise ValueError(f"partial image must be a tensor of shape {(n, *shape)}, got {got}")
    if given.is_floating_point():
        raise ValueError(f"partial image must hold integer levels, got dtype {given.dtype}")
    mask = torch.as_tensor(mask, device=device)
    if mask.dim() == 3 and mask.shape[0] == n:
        mask = mask.unsqueeze(1)
    try:
        known = mask.to(torch.bool).expand(n, *shape).clone()
    except RuntimeError:
        raise ValueError(f"partial mask of shape {tuple(mask.shape)} does not broadcast to {(n, *shape)}") from None
    given = given.to(device=device, dtype=torch.long)
    if known.any():
        kept = given[known]
        if kept.min() < 0 or kept.max() >= levels:
            raise ValueError(f"partial image values must lie in [0, {levels}) where known")
    return torch.where(known, given, image), known

