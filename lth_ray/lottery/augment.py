"""Flip and crop augmentation as batched tensor ops on device-resident data (no DataLoader, no PIL).

Per epoch, every training example gets its own draw: a crop offset (dy, dx) in 0..2P of the image
zero-padded by P = 4 pixels (the shift -4..+4 of torchvision's `RandomCrop(32, padding=4)`) and a
horizontal flip with probability 1/2. The draws are made on the CPU from a generator the caller
derives from (seed, purpose, round, epoch) and are indexed by example, not by batch position, so a
round resumed mid-epoch, retried or computed in a shared trunk sees the same images.

"Zero" padding is a black pixel of the stored image, i.e. the value 0 takes after the dataset's
scaling (`DataSplits.black`), as torchvision pads the image before normalising it. Cropping after
the flip instead of before gives the same distribution (offsets are symmetric).

`apply` is two `gather`s with static shapes: it runs inside a captured CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("crop", "flip")
PAD = 4


@dataclass
class Draws:
    """One epoch's draws, one entry per training example."""

    dy: torch.Tensor  # int64 [N], crop row offset into the padded image, 0..2*PAD
    dx: torch.Tensor  # int64 [N], crop column offset
    flip: torch.Tensor  # bool [N]

    def to(self, device: torch.device | str) -> Draws:
        return Draws(self.dy.to(device), self.dx.to(device), self.flip.to(device))


def draw(kinds: list[str], n: int, generator: torch.Generator) -> Draws:
    """The draws of one epoch for `n` examples; a kind not asked for is the identity."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown} (known: {', '.join(KINDS)})")
    centre = torch.full((n,), PAD, dtype=torch.int64)
    if "crop" in kinds:
        dy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    else:
        dy, dx = centre, centre.clone()
    flip = (
        torch.rand(n, generator=generator) < 0.5
        if "flip" in kinds
        else torch.zeros(n, dtype=torch.bool)
    )
    return Draws(dy, dx, flip)


def apply(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, black: torch.Tensor
) -> torch.Tensor:
    """Crop each image of x [B, C, H, W] at its (dy, dx) in the padded image, flipped where `flip`.

    `black` [C] is the value of a zero pixel after scaling (the padding)."""
    b, c, h, w = x.shape
    padded = black.to(x.dtype).view(1, c, 1, 1).expand(b, c, h + 2 * PAD, w + 2 * PAD).clone()
    padded[:, :, PAD : PAD + h, PAD : PAD + w] = x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy.view(b, 1) + ar_h.view(1, h)  # [B, H]
    cols = torch.where(flip.view(b, 1), ar_w.flip(0).view(1, w), ar_w.view(1, w)) + dx.view(b, 1)
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * PAD))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))
