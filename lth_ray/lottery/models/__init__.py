"""Architectures and their initialisers, built deterministically from a seed: Frankle & Carbin's (2019)
Conv-2/4/6 and LeNet-300-100, and the CIFAR ResNets and VGGs with BatchNorm of Frankle et al. (2020)
and open_lth (`cifar_resnet`, `cifar_vgg`).

Every builder in `MODELS` takes ``(spec, input_shape, num_classes)`` and returns an ``nn.Module`` whose
Conv2d/Linear layers are registered in forward order: `weight_layers` relies on that to name the
last Linear the "output" layer, and pruning relies on it for its tie-breaking order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lth_ray.lottery.models.cifar_resnet import DEPTHS as RESNET_DEPTHS
from lth_ray.lottery.models.cifar_resnet import CifarResNet
from lth_ray.lottery.models.cifar_vgg import PLANS as VGG_PLANS
from lth_ray.lottery.models.cifar_vgg import CifarVGG
from lth_ray.registry import Registry
from lth_ray.specs import ModelSpec

Builder = Callable[[ModelSpec, tuple[int, int, int], int], nn.Module]
MODELS: Registry[Builder] = Registry("model")

INITS = ("glorot_uniform", "glorot_normal", "kaiming_normal", "kaiming_uniform")


@dataclass(frozen=True)
class LayerInfo:
    name: str  # the weight's name in model.named_parameters(), e.g. "features.0.weight"
    kind: str  # "conv" | "fc" | "output" (output = the last Linear)
    module: nn.Module


def weight_layers(model: nn.Module) -> list[LayerInfo]:
    """Every Conv2d/Linear weight in registration (= forward) order; the last Linear is "output"."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    last_linear = max((i for i, (_, m) in enumerate(found) if isinstance(m, nn.Linear)), default=-1)
    layers = []
    for i, (name, module) in enumerate(found):
        kind = "conv" if isinstance(module, nn.Conv2d) else ("output" if i == last_linear else "fc")
        layers.append(LayerInfo(f"{name}.weight" if name else "weight", kind, module))
    return layers


BIAS_INITS = ("zero", "torch")
BN_INITS = ("uniform", "fixed")


@torch.no_grad()
def init_weights(
    model: nn.Module,
    init: str,
    generator: torch.Generator,
    bias_init: str = "zero",
    bn_init: str = "uniform",
) -> None:
    """(Re)initialise every Conv2d/Linear weight and BatchNorm scale in place from `generator`.

    Values are drawn on the generator's device in float32 and copied, so a model initialised on the
    CPU and one already moved to a GPU get the same numbers. Kaiming variants use the ReLU gain and
    fan_in (He et al.); glorot_normal is the untruncated normal with std sqrt(2 / (fan_in + fan_out)).
    Biases become zero (`bias_init: zero`) or keep the value the layer's constructor drew (`torch`,
    seeded by `build_model`). BatchNorm layers, in module order among the weight layers, get a scale
    from U(0, 1) (`bn_init: uniform`, open_lth's default) or 1 (`fixed`) and a zero shift; their
    running statistics start at mean 0, variance 1.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r} (known: {', '.join(INITS)})")
    if bias_init not in BIAS_INITS:
        raise ValueError(f"unknown bias_init {bias_init!r} (known: {', '.join(BIAS_INITS)})")
    if bn_init not in BN_INITS:
        raise ValueError(f"unknown bn_init {bn_init!r} (known: {', '.join(BN_INITS)})")
    layers = {id(li.module): li for li in weight_layers(model)}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            _init_batchnorm(module, bn_init, generator)
            continue
        layer = layers.get(id(module))
        if layer is None:
            continue
        weight = layer.module.weight
        draw = torch.empty(weight.shape, dtype=torch.float32, device=generator.device)
        if init == "glorot_uniform":
            nn.init.xavier_uniform_(draw, generator=generator)
        elif init == "glorot_normal":
            nn.init.xavier_normal_(draw, generator=generator)
        elif init == "kaiming_normal":
            nn.init.kaiming_normal_(draw, mode="fan_in", nonlinearity="relu", generator=generator)
        else:
            nn.init.kaiming_uniform_(draw, mode="fan_in", nonlinearity="relu", generator=generator)
        weight.copy_(draw)
        if layer.module.bias is not None and bias_init == "zero":
            layer.module.bias.zero_()


def _init_batchnorm(bn: nn.modules.batchnorm._BatchNorm, bn_init: str, g: torch.Generator) -> None:
    if bn.affine:
        if bn_init == "uniform":
            scale = torch.rand(bn.weight.shape, generator=g, device=g.device)
            bn.weight.copy_(scale)
        else:
            bn.weight.fill_(1.0)
        bn.bias.zero_()
    if bn.track_running_stats:
        bn.reset_running_stats()


def build_model(
    spec: ModelSpec, input_shape: Sequence[int], num_classes: int, seed: int
) -> nn.Module:
    """Build `spec.arch` and initialise it from `seed` alone: same seed -> bit-identical parameters.

    Construction runs inside a forked CPU RNG seeded with `seed`, so the default initialisers that
    torch modules run in their constructors neither read nor advance the caller's global RNG (and
    any parameter a user-registered model does not expose to `init_weights` is still seeded).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) of positive integers, got {input_shape!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    builder = MODELS.get(spec.arch)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = builder(spec, shape, num_classes)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    init_weights(model, spec.init, generator, spec.bias_init, spec.bn_init)
    return model


# ----------------------------------------------------------------------------------------------
# Architectures.


def scaled(width: int, factor: float) -> int:
    """A hidden width times `spec.width`, rounded half up, at least 1 (tiny smoke-test models)."""
    return max(1, math.floor(width * factor + 0.5))


class ConvNet(nn.Module):
    """VGG-style Conv-2/4/6: blocks of 3x3 conv + ReLU, 2x2 max-pool after each block, then an MLP."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        blocks: Sequence[Sequence[int]],
        hidden: Sequence[int],
        num_classes: int,
        padding: str,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        pad = 1 if padding == "same" else 0
        channels, h, w = input_shape
        layers: list[nn.Module] = []
        for b, block in enumerate(blocks):
            for out in block:
                layers += [nn.Conv2d(channels, out, 3, padding=pad), nn.ReLU()]
                channels, h, w = out, h + 2 * pad - 2, w + 2 * pad - 2
                _check_spatial(h, w, input_shape, padding, f"a conv of block {b + 1}")
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
            _check_spatial(h, w, input_shape, padding, f"the max-pool of block {b + 1}")
        self.features = nn.Sequential(*layers)
        self.classifier = _mlp(channels * h * w, hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """Fully connected net on the flattened image (LeNet-300-100)."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: Sequence[int], num_classes: int):
        super().__init__()
        self.classifier = _mlp(math.prod(input_shape), hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


def _mlp(features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _check_spatial(h: int, w: int, input_shape: tuple[int, ...], padding: str, where: str) -> None:
    if h < 1 or w < 1:
        raise ValueError(
            f"input of shape {tuple(input_shape)} is too small for this architecture with "
            f"padding={padding!r}: the feature map collapses to {h}x{w} after {where}"
        )


def _conv_builder(blocks: list[list[int]]) -> Builder:
    def build(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        scaled_blocks = [[scaled(c, spec.width) for c in block] for block in blocks]
        hidden = [scaled(256, spec.width), scaled(256, spec.width)]
        return ConvNet(input_shape, scaled_blocks, hidden, num_classes, spec.padding)

    return build


MODELS.register("conv2")(_conv_builder([[64, 64]]))
MODELS.register("conv4")(_conv_builder([[64, 64], [128, 128]]))
MODELS.register("conv6")(_conv_builder([[64, 64], [128, 128], [256, 256]]))


@MODELS.register("lenet300_100")
def lenet300_100(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return MLP(input_shape, [scaled(300, spec.width), scaled(100, spec.width)], num_classes)


def _resnet_builder(depth: int) -> Builder:
    def build(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return CifarResNet(input_shape[0], depth, scaled(16, spec.width), num_classes)

    return build


def _vgg_builder(depth: int) -> Builder:
    def build(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        plan = [e if e == "M" else scaled(int(e), spec.width) for e in VGG_PLANS[depth]]
        return CifarVGG(input_shape, plan, num_classes)

    return build


for _depth in RESNET_DEPTHS:
    MODELS.register(f"cifar_resnet_{_depth}")(_resnet_builder(_depth))
for _depth in VGG_PLANS:
    MODELS.register(f"cifar_vgg_{_depth}")(_vgg_builder(_depth))


@MODELS.register("logreg")
def logreg(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Multinomial logistic regression on the flattened image: a convex toy (one linear layer)."""
    return MLP(input_shape, [], num_classes)
