"""Instability analysis: the path, its ends, masks along it, and a convex problem."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lth_ray.lottery import instability as lmc
from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.models import build_model
from lth_ray.lottery.pruning import dense_masks
from lth_ray.lottery.train import clone_state, evaluate
from lth_ray.specs import TrainSpec
from tests.helpers import tiny_trial
from tests.test_train import half_masks

SPEC = TrainSpec(lr=3e-3, batch_size=50, device="cpu")


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_trial().dataset)


def net(data, arch="lenet300_100", seed=0):
    cfg = tiny_trial()
    spec = dataclasses.replace(cfg.model, arch=arch)
    return build_model(spec, data.input_shape, data.num_classes, seed)


def test_two_copies_with_the_same_noise_seed_are_exactly_stable(data):
    model = net(data)
    start = clone_state(model)
    result = lmc.analyse_pair(
        model, start, dense_masks(model), data, SPEC, (40, "it"), (7, 7), points=5
    )
    assert result.path.instability("test") == 0.0
    assert result.path.instability("train") == 0.0
    assert len(set(result.path.error["test"])) == 1  # the same net all along the path


def test_the_path_ends_are_the_copies_and_masks_stay_intact(data):
    model = net(data)
    masks = half_masks(model)
    start = clone_state(model)
    result = lmc.analyse_pair(model, start, masks, data, SPEC, (40, "it"), (1, 2), points=7)
    w1 = lmc.train_copy(model, start, masks, data, SPEC, (40, "it"), 1)
    w2 = lmc.train_copy(model, start, masks, data, SPEC, (40, "it"), 2)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # the noise differs
    for w, i in ((w1, -1), (w2, 0)):
        model.load_state_dict(w)
        loss, acc = evaluate(model, data.test_x, data.test_y, SPEC, torch.device("cpu"))
        assert result.path.error["test"][i] == 1.0 - acc
        assert result.path.loss["test"][i] == loss
    for a in lmc.alphas(7):
        mid = lmc.interpolate(w1, w2, a, masks)
        for name, m in masks.items():
            assert torch.all(mid[name][~m.bool()] == 0)
    e = result.path.error["test"]
    assert result.path.instability("test") == max(e) - (e[0] + e[-1]) / 2
    assert result.path.instability("test") >= abs(e[0] - e[-1]) / 2  # the ends are on the path
    assert result.bn == "none"


def test_a_convex_problem_has_no_loss_barrier(data):
    model = net(data, "logreg")
    start = clone_state(model)
    result = lmc.analyse_pair(
        model, start, dense_masks(model), data, SPEC, (60, "it"), (3, 4), points=11
    )
    for split in ("test", "train"):
        assert result.path.loss_barrier(split) <= 1e-6  # below the chord: convexity
    assert result.path.instability("test") >= 0.0


class BNNet(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(int(torch.tensor(shape).prod()), 16)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(self.flat(x)))))


def test_batchnorm_statistics_are_interpolated_or_recomputed(data):
    torch.manual_seed(0)
    a, b = BNNet(data.input_shape), BNNet(data.input_shape)
    for m, x in ((a, data.train_x[:200]), (b, data.train_x[200:400] * 3)):
        m.train()
        m(x)  # different running statistics
    w1, w2 = clone_state(a), clone_state(b)
    half = lmc.interpolate(w1, w2, 0.5, {})
    assert torch.allclose(
        half["bn.running_mean"], (w1["bn.running_mean"] + w2["bn.running_mean"]) / 2
    )
    model = BNNet(data.input_shape)
    model.load_state_dict(half)
    lmc.recompute_batchnorm(model, data.train_x[:300], 50)
    with torch.no_grad():
        h = model.fc(model.flat(data.train_x[:300]))
    assert torch.allclose(model.bn.running_mean, h.mean(0), atol=1e-5)
    assert model.bn.momentum == BNNet(data.input_shape).bn.momentum
    sets = {"test": (data.test_x, data.test_y)}
    kept = lmc.error_path(model, w1, w2, {}, 3, sets, SPEC, "interpolate")
    redone = lmc.error_path(model, w1, w2, {}, 3, sets, SPEC, "recompute", data.train_x[:300])
    assert kept.alphas == redone.alphas == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="bn must be one of"):
        lmc.error_path(model, w1, w2, {}, 3, sets, SPEC, "average")


def test_alphas_need_two_points():
    assert lmc.alphas(30)[0] == 0.0 and lmc.alphas(30)[-1] == 1.0 and len(lmc.alphas(30)) == 30
    with pytest.raises(ValueError, match="points"):
        lmc.alphas(1)
