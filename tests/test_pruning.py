import math

import pytest
import torch
from torch import nn

from lth_ray.lottery.models import build_model, weight_layers
from lth_ray.lottery.pruning import (
    CRITERIA,
    ScoreContext,
    apply_masks,
    dense_masks,
    layer_fractions,
    prunable_names,
    prune,
    prune_count,
    prune_to,
    schedule_remaining,
    sparsity_report,
)
from lth_ray.specs import ModelSpec


def ctx(init=None, best=None, final=None, masks=None, seed=0) -> ScoreContext:
    ref = next(t for t in (final, best, init) if t is not None)
    masks = masks or {n: torch.ones_like(t, dtype=torch.bool) for n, t in ref.items()}
    return ScoreContext(
        init=init or {}, best=best or {}, final=final or {}, masks=masks,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def kept(masks, name):
    return masks[name].reshape(-1).nonzero().squeeze(1).tolist()


# ----------------------------------------------------------------------------------------------
# Criteria on hand-built tensors.


def test_magnitude_prunes_smallest_final():
    final = {"a": torch.tensor([[0.5, -0.1], [2.0, -0.3]]), "b": torch.tensor([0.05, -4.0])}
    c = ctx(final=final)
    scores = CRITERIA.get("magnitude")(c, ["a", "b"])
    new, n = prune(scores, c.masks, ["a", "b"], 0.5, "global")
    assert n == 3
    assert kept(new, "a") == [0, 2] and kept(new, "b") == [1]


def test_stability_prunes_largest_change_and_skips_when_identical():
    best = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    final = {"a": torch.tensor([1.5, 0.9, -2.0, 1.0])}  # |diff| = .5, .1, 3, 0
    c = ctx(best=best, final=final)
    scores = CRITERIA.get("stability")(c, ["a"])
    new, n = prune(scores, c.masks, ["a"], 0.5, "global")
    assert n == 2 and kept(new, "a") == [1, 3]
    assert CRITERIA.get("stability")(ctx(best=final, final=dict(final)), ["a"]) is None
    # a difference only at an already-pruned weight carries no information either
    masks = {"a": torch.tensor([True, True, False, True])}
    best2 = {"a": final["a"].clone()}
    best2["a"][2] = 7.0
    assert CRITERIA.get("stability")(ctx(best=best2, final=final, masks=masks), ["a"]) is None
    # ... but a difference in any named layer is enough
    two = ctx(
        best={"a": best2["a"], "b": torch.ones(2)}, final={"a": final["a"], "b": torch.zeros(2)}
    )
    assert CRITERIA.get("stability")(two, ["a", "b"]) is not None


def test_movement_prunes_smallest_change_from_init():
    init = {"a": torch.tensor([0.0, 1.0, -1.0, 2.0])}
    final = {"a": torch.tensor([0.1, 3.0, -1.05, 0.0])}  # moved .1, 2, .05, 2
    c = ctx(init=init, final=final)
    new, _ = prune(CRITERIA.get("movement")(c, ["a"]), c.masks, ["a"], 0.5, "global")
    assert kept(new, "a") == [1, 3]


def test_large_init_large_final_keeps_weights_large_at_both_ends():
    # w0: large/large, w1: large init only, w2: large final only, w3: small/small, w4: medium/medium
    init = {"a": torch.tensor([5.0, 4.0, 0.1, 0.05, 2.0])}
    final = {"a": torch.tensor([-5.0, 0.1, 4.0, -0.05, 2.0])}
    c = ctx(init=init, final=final)
    scores = CRITERIA.get("large_init_large_final")(c, ["a"])
    new, _ = prune_to(scores, c.masks, ["a"], 2, "global")
    assert kept(new, "a") == [0, 4]  # magnitude alone would keep w0 and w2
    new1, _ = prune_to(scores, c.masks, ["a"], 4, "global")
    assert kept(new1, "a") == [0, 1, 2, 4]  # the small/small weight goes first


def test_random_deterministic_per_seed():
    masks = {"a": torch.ones(4, 5, dtype=torch.bool), "b": torch.ones(7, dtype=torch.bool)}
    fn = CRITERIA.get("random")
    s1 = fn(ctx(final={"a": torch.zeros(4, 5)}, masks=masks, seed=1), ["a", "b"])
    s1b = fn(ctx(final={"a": torch.zeros(4, 5)}, masks=masks, seed=1), ["a", "b"])
    s2 = fn(ctx(final={"a": torch.zeros(4, 5)}, masks=masks, seed=2), ["a", "b"])
    assert all(torch.equal(s1[n], s1b[n]) for n in masks)
    assert not torch.equal(s1["a"], s2["a"])
    assert s1["a"].shape == (4, 5) and 0 <= s1["a"].min() and s1["a"].max() < 1
    m1, _ = prune(s1, masks, ["a", "b"], 0.4, "global")
    m2, _ = prune(s2, masks, ["a", "b"], 0.4, "global")
    assert not all(torch.equal(m1[n], m2[n]) for n in masks)


# ----------------------------------------------------------------------------------------------
# Exact counts and tie-breaking.


@pytest.mark.parametrize(
    "active,fraction,expected",
    [
        (45, 0.1, 5),
        (10, 0.15, 2),
        (10, 0.25, 3),
        (10, 0.24, 2),
        (3, 0.5, 2),
        (7, 1.0, 7),
        (0, 0.2, 0),
        (1, 0.2, 0),
    ],
)
def test_prune_count_rounds_half_up(active, fraction, expected):
    assert prune_count(active, fraction) == expected


def test_prune_count_rejects_bad_input():
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            prune_count(10, bad)
    with pytest.raises(ValueError):
        prune_count(-1, 0.1)


def test_all_tied_scores_remove_exact_count_deterministically():
    masks = {"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(2, 4, dtype=torch.bool)}
    masks["a"][[1, 4]] = False  # 8 + 8 = 16 active
    scores = {"a": torch.zeros(10), "b": torch.zeros(2, 4)}
    new, n = prune(scores, masks, ["a", "b"], 0.6, "global")
    assert n == prune_count(16, 0.6) == 10
    # ties broken by layer position in names, then flat index: all of a's 8, then b's first 2
    assert kept(new, "a") == [] and kept(new, "b") == [2, 3, 4, 5, 6, 7]
    again, _ = prune(scores, masks, ["a", "b"], 0.6, "global")
    assert all(torch.equal(new[k], again[k]) for k in masks)
    # names order is the tie-break order
    swapped, _ = prune(scores, masks, ["b", "a"], 0.6, "global")
    assert kept(swapped, "b") == [] and kept(swapped, "a") == [3, 5, 6, 7, 8, 9]


def test_partial_ties_pruned_by_score_then_position():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0, 1.0, 1.0, 0.5])}
    masks = {"a": torch.ones(6, dtype=torch.bool)}
    new, n = prune(scores, masks, ["a"], 0.5, "global")  # 0.5 and the first two 1.0s
    assert n == 3 and kept(new, "a") == [0, 2, 4]


def _reference_prune(scores, masks, names, k):
    """The spec's definition: first k of a stable sort over (score, layer position, flat index)."""
    entries = [
        (float(scores[n].reshape(-1)[i]), pos, i)
        for pos, n in enumerate(names)
        for i in masks[n].reshape(-1).nonzero().squeeze(1).tolist()
    ]
    return {(names[pos], i) for _, pos, i in sorted(entries)[:k]}


@pytest.mark.parametrize("seed", range(6))
def test_prune_matches_stable_sort_reference_with_heavy_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a": (4, 5), "b": (13,), "c": (2, 3, 3)}
    masks = {n: torch.rand(s, generator=gen) > 0.3 for n, s in shapes.items()}
    # few distinct values (and -0.0 vs 0.0) so most scores are tied
    scores = {n: torch.randint(-2, 3, s, generator=gen).float() * 0.5 for n, s in shapes.items()}
    scores["b"][0] = -0.0
    names = ["c", "a", "b"]
    active = sum(int(masks[n].sum()) for n in names)
    for fraction in (0.1, 0.37, 0.5, 0.9, 1.0):
        new, n = prune(scores, masks, names, fraction, "global")
        removed = {
            (k, i)
            for k in names
            for i in (masks[k] & ~new[k]).reshape(-1).nonzero().squeeze(1).tolist()
        }
        assert n == len(removed) == prune_count(active, fraction)
        assert removed == _reference_prune(scores, masks, names, n)


def test_large_init_large_final_ranks_share_ties_and_span_layers():
    init = {"a": torch.tensor([1.0, 1.0, 3.0]), "b": torch.tensor([2.0, 0.5])}
    final = {"a": torch.tensor([3.0, 2.0, 1.0]), "b": torch.tensor([2.0, 2.0])}
    c = ctx(init=init, final=final)
    s = CRITERIA.get("large_init_large_final")(c, ["a", "b"])
    # ranks over both layers: init ranks a=[1,1,4] b=[3,0]; final ranks a=[4,1,0] b=[1,1]
    lo = {"a": [1, 1, 0], "b": [1, 0]}
    hi = {"a": [4, 1, 4], "b": [3, 1]}
    for n in ("a", "b"):
        expected = (
            torch.tensor(lo[n], dtype=torch.float64) + torch.tensor(hi[n], dtype=torch.float64) / 6
        )
        torch.testing.assert_close(s[n], expected)
    masked = ctx(
        init=init,
        final=final,
        masks={"a": torch.tensor([True, False, True]), "b": torch.ones(2, dtype=torch.bool)},
    )
    s2 = CRITERIA.get("large_init_large_final")(masked, ["a", "b"])
    assert s2["a"][1] == -1  # inactive weights are not ranked
    assert s2["a"][0] == 1 + 3 / 5  # init rank among active [1,3,2,.5] -> 1; final [3,1,2,2] -> 3


def test_layerwise_counts_and_fraction_dict():
    gen = torch.Generator().manual_seed(0)
    masks = {
        "a": torch.ones(40, dtype=torch.bool),
        "b": torch.ones(25, dtype=torch.bool),
        "c": torch.ones(3, dtype=torch.bool),
    }
    scores = {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}
    new, n = prune(scores, masks, ["a", "b"], {"a": 0.1, "b": 0.3}, "layerwise")
    assert n == 4 + 8
    assert int(new["a"].sum()) == 36 and int(new["b"].sum()) == 17
    assert torch.equal(new["c"], masks["c"])  # not named: untouched
    # each layer loses its own lowest scores
    assert set(kept(new, "a")) == set(torch.argsort(scores["a"])[4:].tolist())
    single, n2 = prune(scores, masks, ["a", "b"], 0.2, "layerwise")
    assert n2 == 8 + 5
    with pytest.raises(ValueError, match="layerwise"):
        prune(scores, masks, ["a", "b"], {"a": 0.1, "b": 0.3}, "global")
    with pytest.raises(KeyError):
        prune(scores, masks, ["a", "b"], {"a": 0.1}, "layerwise")
    with pytest.raises(ValueError, match="scope"):
        prune(scores, masks, ["a"], 0.1, "per_layer")


def test_global_ranks_across_layers():
    scores = {"a": torch.tensor([0.1, 0.2, 0.9]), "b": torch.tensor([0.3, 0.05, 0.8, 0.7])}
    masks = {n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()}
    new, n = prune(scores, masks, ["a", "b"], 0.4, "global")  # round(2.8) = 3
    assert n == 3 and kept(new, "a") == [2] and kept(new, "b") == [0, 2, 3]


def test_pruned_weights_never_selected_and_masks_not_mutated():
    scores = {"a": torch.arange(10, dtype=torch.float32)}
    masks = {"a": torch.ones(10, dtype=torch.bool)}
    masks["a"][:4] = False  # the four lowest scores are already gone
    before = masks["a"].clone()
    new, n = prune(scores, masks, ["a"], 0.5, "global")
    assert n == 3 and kept(new, "a") == [7, 8, 9]
    assert torch.equal(masks["a"], before)
    assert not (new["a"] & ~masks["a"]).any()  # subset of the old mask
    assert new["a"] is not masks["a"]


def test_repeated_rounds_stay_subsets_with_random_scores():
    gen = torch.Generator().manual_seed(3)
    masks = {"a": torch.ones(6, 7, dtype=torch.bool), "b": torch.ones(11, dtype=torch.bool)}
    for _ in range(6):
        scores = {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}
        active = sum(int(m.sum()) for m in masks.values())
        new, n = prune(scores, masks, ["a", "b"], 0.2, "global")
        assert n == prune_count(active, 0.2)
        assert sum(int(m.sum()) for m in new.values()) == active - n
        assert all(not (new[k] & ~masks[k]).any() for k in masks)
        masks = new


def test_nan_scores_raise():
    scores = {"a": torch.tensor([1.0, float("nan"), 2.0])}
    with pytest.raises(ValueError, match="NaN"):
        prune(scores, {"a": torch.ones(3, dtype=torch.bool)}, ["a"], 0.5, "global")


def test_prune_to_hits_exact_remaining():
    gen = torch.Generator().manual_seed(1)
    masks = {"a": torch.ones(5, 6, dtype=torch.bool), "b": torch.ones(9, dtype=torch.bool)}
    masks["a"][0] = False  # 24 + 9 active
    scores = {n: torch.zeros(m.shape) for n, m in masks.items()}  # all tied
    new, n = prune_to(scores, masks, ["a", "b"], 10, "global")
    assert n == 23 and sum(int(m.sum()) for m in new.values()) == 10
    scores = {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}
    lw, n2 = prune_to(scores, masks, ["a", "b"], {"a": 3, "b": 9}, "layerwise")
    assert int(lw["a"].sum()) == 3 and torch.equal(lw["b"], masks["b"]) and n2 == 21
    assert not (lw["a"] & ~masks["a"]).any()
    active_scores = scores["a"][masks["a"]]
    assert torch.equal(
        torch.sort(scores["a"][lw["a"]]).values, torch.sort(active_scores).values[-3:]
    )
    with pytest.raises(ValueError, match="cannot keep"):
        prune_to(scores, masks, ["a", "b"], 34, "global")
    with pytest.raises(ValueError):
        prune_to(scores, masks, ["a", "b"], 10, "layerwise")
    with pytest.raises(ValueError):
        prune_to(scores, masks, ["a", "b"], {"a": 3, "b": 9}, "global")


@pytest.mark.parametrize("sizes", [(1,), (7,), (100,), (13, 17), (250, 3, 40)])
@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.2, 0.5])
def test_schedule_remaining_matches_repeated_prune(sizes, fraction):
    gen = torch.Generator().manual_seed(len(sizes))
    names = [f"l{i}" for i in range(len(sizes))]
    rounds = 8
    for scope in ("global", "layerwise"):
        masks = {n: torch.ones(s, dtype=torch.bool) for n, s in zip(names, sizes)}
        active = sum(sizes) if scope == "global" else dict(zip(names, sizes))
        schedule = schedule_remaining(active, fraction, rounds, scope)
        assert len(schedule) == rounds
        for target in schedule:
            scores = {n: torch.rand(m.shape, generator=gen) for n, m in masks.items()}
            masks, _ = prune(scores, masks, names, fraction, scope)
            got = {n: int(m.sum()) for n, m in masks.items()}
            assert (sum(got.values()) if scope == "global" else got) == target
    # one-shot to the schedule's last level hits the same count
    dense = {n: torch.ones(s, dtype=torch.bool) for n, s in zip(names, sizes)}
    scores = {n: torch.rand(m.shape, generator=gen) for n, m in dense.items()}
    last = schedule_remaining(sum(sizes), fraction, rounds, "global")[-1]
    one_shot, _ = prune_to(scores, dense, names, last, "global")
    assert sum(int(m.sum()) for m in one_shot.values()) == last


def test_schedule_remaining_layerwise_fraction_dict():
    steps = schedule_remaining({"c": 100, "f": 100}, {"c": 0.1, "f": 0.2}, 2, "layerwise")
    assert steps == [{"c": 90, "f": 80}, {"c": 81, "f": 64}]
    with pytest.raises(ValueError):
        schedule_remaining(100, {"c": 0.1}, 2, "global")


# ----------------------------------------------------------------------------------------------
# Model-level helpers.


def small_conv4():
    return build_model(ModelSpec(arch="conv4", width=0.125), (3, 16, 16), 10, seed=0)


def test_dense_masks_apply_masks_and_prunable_names():
    model = small_conv4()
    masks = dense_masks(model)
    layers = weight_layers(model)
    assert list(masks) == [li.name for li in layers]
    assert all(m.dtype == torch.bool and bool(m.all()) for m in masks.values())
    assert all(masks[li.name].shape == li.module.weight.shape for li in layers)
    name = layers[0].name
    masks[name][0] = False
    bias_before = layers[0].module.bias.clone()
    apply_masks(model, masks)
    w = dict(model.named_parameters())[name]
    assert bool((w[0] == 0).all()) and bool((w[1:] != 0).all())
    assert torch.equal(layers[0].module.bias, bias_before)
    assert prunable_names(model, ["output"]) == [li.name for li in layers[:-1]]
    assert prunable_names(model, ["conv", layers[5].name]) == [layers[4].name, layers[6].name]
    with pytest.raises(ValueError, match="match no layer"):
        prunable_names(model, ["outptu"])


def test_prune_works_on_channels_last_models():
    model = small_conv4().to(memory_format=torch.channels_last)
    masks = dense_masks(model)
    names = prunable_names(model, ["output"])
    final = {li.name: li.module.weight.detach() for li in weight_layers(model)}
    scores = CRITERIA.get("magnitude")(ctx(final=final, masks=masks), names)
    new, n = prune(scores, masks, names, 0.2, "global")
    active = sum(masks[k].numel() for k in names)
    assert n == prune_count(active, 0.2)
    apply_masks(model, new)
    zeros = sum(int((dict(model.named_parameters())[k] == 0).sum()) for k in names)
    assert zeros == n
    # magnitude: every pruned weight is no larger than every survivor
    w = torch.cat([final[k].reshape(-1) for k in names]).abs()
    m = torch.cat([new[k].reshape(-1) for k in names])
    assert w[~m].max() <= w[m].min()


def test_layer_fractions_by_kind():
    model = small_conv4()
    names = prunable_names(model, [])
    fr = layer_fractions(model, names, 0.2, {"conv": 0.1, "output": 0.05})
    kinds = {li.name: li.kind for li in weight_layers(model)}
    assert {n: fr[n] for n in names} == {
        n: {"conv": 0.1, "fc": 0.2, "output": 0.05}[kinds[n]] for n in names
    }
    assert list(fr) == names
    with pytest.raises(ValueError):
        layer_fractions(model, names, 0.2, {"dense": 0.1})


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)  # 1x5x5 -> 2x3x3
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_sparsity_report_arithmetic_by_hand():
    model = TinyConv()  # weights 18 + 54, biases 2 + 3: 77 parameters
    masks = dense_masks(model)
    masks["conv.weight"].view(-1)[:6] = False
    masks["fc.weight"].view(-1)[:10] = False
    r = sparsity_report(model, masks, ["conv.weight", "fc.weight"], (1, 5, 5))
    assert r.active_weights == 12 + 44
    assert r.sparsity == pytest.approx(16 / 72)
    assert r.weights_remaining == pytest.approx(100 * 56 / 72)
    assert r.sparsity_all == pytest.approx(16 / 77)
    assert r.compression_ratio == pytest.approx(77 / 61)
    assert r.per_layer == pytest.approx({"conv.weight": 6 / 18, "fc.weight": 10 / 54})
    assert r.flops_dense == 2 * 18 * 9 + 2 * 54
    assert r.flops_sparse == 2 * 12 * 9 + 2 * 44
    assert r.flops_reduction == pytest.approx(432 / 304)
    only_conv = sparsity_report(model, masks, ["conv.weight"], (1, 5, 5))
    assert only_conv.sparsity == pytest.approx(6 / 18) and only_conv.active_weights == 12
    assert only_conv.sparsity_all == pytest.approx(16 / 77)  # excluded layers still count here
    assert model.training  # the dummy pass restores the mode


def test_sparsity_report_dense_conv4_matches_reference_flops():
    model = build_model(ModelSpec(arch="conv4"), (3, 32, 32), 10, seed=0)
    names = prunable_names(model, ["output"])
    r = sparsity_report(model, dense_masks(model), names, (3, 32, 32))
    assert (
        r.sparsity == 0
        and r.sparsity_all == 0
        and r.compression_ratio == 1
        and r.flops_reduction == 1
    )
    assert r.weights_remaining == 100
    # anchors.md: ~0.59 GFLOP per image for forward + backward (~3x forward)
    assert abs(3 * r.flops_dense / 0.59e9 - 1) < 0.02
    empty = {k: torch.zeros_like(v) for k, v in dense_masks(model).items()}
    r0 = sparsity_report(model, empty, names, (3, 32, 32))
    assert r0.active_weights == 0 and r0.flops_sparse == 0 and math.isinf(r0.flops_reduction)
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert r0.compression_ratio == pytest.approx(
        sum(p.numel() for p in model.parameters()) / biases
    )


def test_large_init_large_final_ranks_within_each_layer_in_layerwise_scope():
    init = {"a": torch.tensor([1.0, 1.0, 3.0]), "b": torch.tensor([2.0, 0.5])}
    final = {"a": torch.tensor([3.0, 2.0, 1.0]), "b": torch.tensor([2.0, 2.0])}
    c = ctx(init=init, final=final)
    c.scope = "layerwise"
    s = CRITERIA.get("large_init_large_final")(c, ["a", "b"])
    # per layer: a: init ranks [0,0,2], final [2,1,0]; b: init [1,0], final [0,0]
    torch.testing.assert_close(
        s["a"], torch.tensor([0 + 2 / 4, 0 + 1 / 4, 0 + 2 / 4], dtype=torch.float64)
    )
    torch.testing.assert_close(s["b"], torch.tensor([0 + 1 / 3, 0 + 0 / 3], dtype=torch.float64))
    for n in ("a", "b"):  # the same as scoring the layer alone
        alone = ctx(init={n: init[n]}, final={n: final[n]})
        torch.testing.assert_close(s[n], CRITERIA.get("large_init_large_final")(alone, [n])[n])


@torch.no_grad()
def test_zeros_all_counts_exact_zeros_of_every_parameter():
    """The study's sparsity: exactly-zero values over all parameters, masked or not."""
    model = TinyConv()  # 77 parameters
    for p in model.parameters():
        p.fill_(0.5)
    masks = dense_masks(model)
    masks["fc.weight"].view(-1)[:10] = False
    apply_masks(model, masks)  # 10 masked weights -> 0
    model.conv.bias.zero_()  # 2 biases at zero, never masked
    model.fc.weight.view(-1)[20] = 0.0  # an active weight that happens to be 0
    r = sparsity_report(model, masks, ["conv.weight", "fc.weight"], (1, 5, 5))
    assert r.zeros_all == pytest.approx((10 + 2 + 1) / 77)
    assert r.sparsity_all == pytest.approx(10 / 77)  # masked only
