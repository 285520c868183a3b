"""The CIFAR ResNets and VGGs with BatchNorm: open_lth's layout, parameter counts, initialisers,
and BatchNorm's place in pruning (never a prunable layer, never in the sparsity denominator)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth_ray.lottery.models import build_model, weight_layers
from lth_ray.lottery.pruning import dense_masks, prunable_names, sparsity_report
from lth_ray.specs import ModelSpec

# parameter counts and BatchNorm layers of open_lth's models of the same name (counted from
# facebookresearch/open_lth's models/cifar_resnet.py and models/cifar_vgg.py)
OPEN_LTH = {
    "cifar_resnet_20": (272_474, 21),
    "cifar_resnet_32": (466_906, 33),
    "cifar_resnet_44": (661_338, 45),
    "cifar_resnet_56": (855_770, 57),
    "cifar_resnet_110": (1_730_714, 111),
    "cifar_vgg_11": (9_231_114, 8),
    "cifar_vgg_13": (9_416_010, 10),
    "cifar_vgg_16": (14_728_266, 13),
    "cifar_vgg_19": (20_040_522, 16),
}


def _build(arch: str, width: float = 1.0, seed: int = 0, **kw) -> nn.Module:
    return build_model(
        ModelSpec(arch=arch, init="kaiming_normal", width=width, **kw), (3, 32, 32), 10, seed
    )


def _bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("arch", sorted(OPEN_LTH))
def test_parameter_and_batchnorm_counts_equal_open_lth(arch):
    model = build_model(ModelSpec(arch=arch, init="kaiming_normal"), (3, 32, 32), 10, 0)
    params, bns = OPEN_LTH[arch]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(_bns(model)) == bns


def test_resnet_width_multiplier_is_open_lth_w():
    """width 2 = open_lth's cifar_resnet_20_32 (W = 32 filters in the first stage)."""
    model = _build("cifar_resnet_20", width=2.0)
    assert sum(p.numel() for p in model.parameters()) == 1_084_586
    assert model.conv.out_channels == 32 and model.fc.in_features == 128


def test_resnet_layout_shortcuts_and_output():
    model = _build("cifar_resnet_20")
    layers = weight_layers(model)
    shortcuts = [li for li in layers if ".shortcut." in li.name]
    assert [li.name for li in shortcuts] == [
        "blocks.3.shortcut.0.weight",
        "blocks.6.shortcut.0.weight",
    ]
    assert all(li.module.kernel_size == (1, 1) and li.module.stride == (2, 2) for li in shortcuts)
    assert layers[-1].name == "fc.weight" and layers[-1].kind == "output"
    assert all(li.module.bias is None for li in layers if li.kind == "conv")
    assert len(layers) == 22  # 19 3x3 convs, 2 shortcut convs, fc
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_vgg_layout_pools_and_fc():
    model = _build("cifar_vgg_16")
    pools = [m for m in model.layers if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4
    assert model.fc.in_features == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert all(li.module.bias is not None for li in weight_layers(model))


def test_vgg_refuses_images_too_small():
    with pytest.raises(ValueError, match="too small for a CIFAR VGG"):
        build_model(ModelSpec(arch="cifar_vgg_11"), (3, 16, 16), 10, 0)


def test_initialisers_kaiming_weights_and_uniform_batchnorm():
    model = _build("cifar_resnet_20", seed=3)
    conv = model.blocks[4].conv1.weight
    fan_in = conv[0].numel()
    assert abs(conv.std().item() - (2 / fan_in) ** 0.5) < 0.1 * (2 / fan_in) ** 0.5
    scales = torch.cat([bn.weight.detach() for bn in _bns(model)])
    assert 0 <= scales.min() and scales.max() < 1 and abs(scales.mean().item() - 0.5) < 0.05
    assert all(bool((bn.bias == 0).all()) for bn in _bns(model))
    assert all(
        bool((bn.running_mean == 0).all() and (bn.running_var == 1).all()) for bn in _bns(model)
    )
    fixed = _build("cifar_resnet_20", seed=3, bn_init="fixed")
    assert all(bool((bn.weight == 1).all()) for bn in _bns(fixed))


def test_same_seed_same_net_bias_init_choices():
    a, b = _build("cifar_vgg_11", seed=5), _build("cifar_vgg_11", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = _build("cifar_vgg_11", seed=6)
    assert not torch.equal(a.layers[0].bn.weight, c.layers[0].bn.weight)
    assert bool((a.fc.bias == 0).all())
    torch_bias = _build("cifar_vgg_11", seed=5, bias_init="torch")
    bound = 1 / 512**0.5
    assert bool((torch_bias.fc.bias != 0).all()) and bool((torch_bias.fc.bias.abs() <= bound).all())


def test_batchnorm_is_never_prunable_nor_in_the_sparsity_denominator():
    model = _build("cifar_resnet_20", width=0.25)
    names = prunable_names(model, [])
    assert not any("bn" in n or ".shortcut.1." in n for n in names)
    assert "blocks.3.shortcut.0.weight" in names and "fc.weight" in names
    masks = dense_masks(model)
    assert set(masks) == {li.name for li in weight_layers(model)}
    # prune half of every prunable layer: the sparsity over prunable weights is exactly 1/2
    for n in names:
        flat = masks[n].flatten()
        flat[: flat.numel() // 2 + flat.numel() % 2] = False
    rep = sparsity_report(model, masks, names, (3, 32, 32))
    prunable = sum(masks[n].numel() for n in names)
    removed = sum(int((~masks[n]).sum()) for n in names)
    assert rep.sparsity == pytest.approx(removed / prunable)
    bn_params = sum(p.numel() for bn in _bns(model) for p in bn.parameters())
    assert bn_params > 0 and prunable + bn_params + model.fc.bias.numel() == sum(
        p.numel() for p in model.parameters()
    )


def test_exclude_by_module_name_weight_name_or_kind():
    model = _build("cifar_vgg_16", width=0.125)
    every = prunable_names(model, [])
    for entry in ("fc", "fc.weight", "output"):
        assert prunable_names(model, [entry]) == [n for n in every if n != "fc.weight"]
    assert "layers.0.conv.weight" not in prunable_names(model, ["layers.0.conv"])
    with pytest.raises(ValueError, match="match no layer"):
        prunable_names(model, ["layers.0.bn"])
