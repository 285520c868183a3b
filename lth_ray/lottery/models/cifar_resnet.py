"""CIFAR-10 ResNets of depth 6n + 2 (He et al. 2016, Section 4.2), laid out as open_lth lays them out.

A 3x3 stem conv + BatchNorm, three stages of n basic blocks with W, 2W and 4W filters (W = 16 at
width 1; the second and third stage start with a stride-2 block), global average pooling and one
linear layer. A block is conv-BN-ReLU-conv-BN plus a shortcut; where the shape changes the shortcut
is a stride-2 1x1 conv + BatchNorm (option B), a prunable weight layer like any other conv. Convs
have no bias (BatchNorm supplies it); the linear layer has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (20, 32, 44, 56, 110)


class Block(nn.Module):
    """A basic residual block: two 3x3 convs with BatchNorm; ReLU after the sum."""

    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=2 if downsample else 1, bias=False),
                nn.BatchNorm2d(f_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, in_channels: int, depth: int, width: int, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, current = [], width
        for stage, filters in enumerate((width, 2 * width, 4 * width)):
            for b in range(n):
                blocks.append(Block(current, filters, downsample=stage > 0 and b == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(current, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
