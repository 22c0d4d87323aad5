"""CycleGAN's image pool (Shrivastava et al., 2017): the discriminator is shown generated images
drawn from a history of the generator's recent outputs, not only its latest batch, which damps the
oscillation of the two networks."""
from __future__ import annotations

import torch


class ImagePool:
    """A history of up to ``size`` generated images.

    Each image of a batch passed through the pool is, while the pool is not full, stored and
    returned as is; once it is full, with probability 1/2 it replaces a stored image drawn
    uniformly, which is returned in its place, and otherwise it is returned as is. ``size=0``
    returns every batch unchanged. The draws come from torch's global CPU generator, which a
    checkpoint saves, and the stored images are part of ``state_dict``, so a resumed run draws
    what the uninterrupted one would.
    """

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"pool size must be an integer >= 0, got {size!r}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach()
        if self.size == 0:
            return batch
        out = []
        for image in batch:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                k = int(torch.randint(self.size, ()))
                out.append(self.images[k])
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, object]:
        return {"size": self.size, "images": [image.cpu() for image in self.images]}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore a pool saved by ``state_dict`` (onto the device of its first use: the images'
        device is that of the batches, set by the caller's ``to``)."""
        if not isinstance(state, dict) or set(state) != {"size", "images"}:
            raise ValueError("an image pool state must hold 'size' and 'images'")
        images = state["images"]
        if state["size"] != self.size:
            raise ValueError(f"the saved image pool holds up to {state['size']} images, this one {self.size}")
        if not isinstance(images, list) or len(images) > self.size or \
                not all(isinstance(t, torch.Tensor) and t.shape == images[0].shape for t in images):
            raise ValueError(f"the saved image pool must be a list of at most {self.size} images of one shape")
        self.images = list(images)

    def to(self, device: torch.device) -> ImagePool:
        self.images = [image.to(device) for image in self.images]
        return self
