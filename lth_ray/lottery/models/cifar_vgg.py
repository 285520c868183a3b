"""CIFAR-10 VGG-11/13/16/19 with BatchNorm (Simonyan & Zisserman's configurations A, B, D, E), laid
out as open_lth lays them out: 3x3 conv (with bias) + BatchNorm + ReLU modules, 2x2 max-pools
between the stages, no pool after the last stage, a 2x2 average pool and one linear layer of 512
inputs (no hidden fully connected layers). On 32x32 images the last stage works at 2x2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PLANS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    + [512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class ConvModule(nn.Module):
    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class CifarVGG(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        plan: list[int | str],
        num_classes: int,
    ) -> None:
        super().__init__()
        channels, h, w = input_shape
        pools = plan.count("M") + 1  # the stages' max-pools, then the 2x2 average pool
        if h < 2**pools or w < 2**pools:
            raise ValueError(
                f"input of shape {tuple(input_shape)} is too small for a CIFAR VGG: {pools} 2x2"
                f" poolings need at least {2**pools}x{2**pools} pixels"
            )
        layers: list[nn.Module] = []
        for entry in plan:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(ConvModule(channels, int(entry)))
                channels = int(entry)
        self.layers = nn.Sequential(*layers)
        self.spatial = (h // 2**pools) * (w // 2**pools)
        self.fc = nn.Linear(channels * self.spatial, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(self.layers(x), 2)
        return self.fc(x.flatten(1))
