"""Adam's two epsilon forms: torch's `sqrt(v_hat) + eps` and Keras / TF1's `sqrt(v) + eps`.

The hand-computed steps below spell out both update rules in float64; the optimizers run in float32
(the step count and bias corrections of `KerasAdam` are float32 device scalars), hence `ATOL`.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.fastpath import FastPathOptions, make_fast_optimizer, train_fast
from lth_ray.lottery.models import build_model
from lth_ray.lottery.optim import KerasAdam, ScheduledSGD
from lth_ray.lottery.pruning import apply_masks, dense_masks
from lth_ray.lottery.train import make_optimizer, masked_update, train
from lth_ray.specs import TrainSpec
from tests.helpers import tiny_trial

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 2e-6
W0 = [1.0, -0.5, 2.0, 0.25]
# Gradients of the size of epsilon (and one coordinate at 1e-4) so the two forms differ noticeably.
GRADS = [
    [0.02, -0.01, 0.001, 1e-4],
    [0.015, 0.02, -0.002, 1e-4],
    [-0.01, 0.005, 0.003, -1e-4],
    [0.03, -0.02, 0.001, 1e-4],
]
LR, BETAS, EPS = 0.1, (0.9, 0.999), 1e-2


def reference(
    form: str, w0: list[float], grads: list[list[float]], lr: float, eps: float, wd: float = 0.0
) -> list[list[float]]:
    """Weights after every step, Adam with L2 weight decay, in float64 (Python floats)."""
    b1, b2 = BETAS
    w, m, v = list(w0), [0.0] * len(w0), [0.0] * len(w0)
    out = []
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            gi += wd * w[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            if form == "torch":  # eps after bias-correcting v
                m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
                w[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
            else:  # Keras / TF1: bias corrections in the step size, eps on the raw sqrt(v)
                lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                w[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)
        out.append(list(w))
    return out


def adam(form: str, params, lr: float = LR, eps: float = EPS, wd: float = 0.0):
    if form == "keras":
        return KerasAdam(params, lr=lr, betas=BETAS, eps=eps, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, betas=BETAS, eps=eps, weight_decay=wd)


def run_steps(opt: torch.optim.Optimizer, p: torch.Tensor, grads) -> list[torch.Tensor]:
    out = []
    for g in grads:
        p.grad = torch.as_tensor(g, dtype=p.dtype, device=p.device)
        opt.step()
        out.append(p.detach().clone())
    return out


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("form", ["torch", "keras"])
def test_matches_hand_computed_steps(form, wd):
    p = torch.tensor(W0, requires_grad=True)
    got = run_steps(adam(form, [p], wd=wd), p, GRADS)
    want = reference(form, W0, GRADS, LR, EPS, wd)
    for t, (g, w) in enumerate(zip(got, want), start=1):
        assert torch.allclose(g, torch.tensor(w, dtype=torch.float32), rtol=0, atol=ATOL), t


def test_hand_computed_forms_differ_noticeably():
    """The comparison above tells the forms apart: they differ by far more than its tolerance."""
    torch_form = reference("torch", W0, GRADS, LR, EPS)
    keras_form = reference("keras", W0, GRADS, LR, EPS)
    gap = max(abs(a - b) for ta, tb in zip(torch_form, keras_form) for a, b in zip(ta, tb))
    assert gap > 1000 * ATOL


def test_weight_decay_is_l2_added_to_the_gradient():
    """A zero gradient with weight decay moves the weights as the gradient wd * w would."""
    w0 = torch.tensor(W0)
    decayed = w0.clone().requires_grad_()
    run_steps(KerasAdam([decayed], lr=LR, eps=EPS, weight_decay=0.1), decayed, [[0.0] * 4] * 3)
    explicit = w0.clone().requires_grad_()
    opt = KerasAdam([explicit], lr=LR, eps=EPS)
    for _ in range(3):
        explicit.grad = 0.1 * explicit.detach().clone()
        opt.step()
    assert torch.equal(decayed, explicit)
    assert not torch.equal(decayed, w0)


def test_forms_differ_at_step_one_and_converge():
    """Constant gradient g: m_hat = g and v_hat = g^2 exactly, so torch steps lr * g / (|g| + eps)
    and Keras lr * g / (|g| + eps / sqrt(1 - b2^t)): far apart at t = 1, equal as t grows."""
    g, eps, lr, steps = 1e-3, 1e-3, 1e-3, 5000
    b2 = BETAS[1]
    deltas = {}
    for form in ("torch", "keras"):
        p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = adam(form, [p], lr=lr, eps=eps)
        prev, d = 0.0, []
        for _ in range(steps):
            p.grad = torch.full_like(p, g)
            opt.step()
            d.append(prev - float(p.detach()))
            prev = float(p.detach())
        deltas[form] = d
    ratio = [k / t for k, t in zip(deltas["keras"], deltas["torch"])]
    for t in (1, 10, 100, 1000, steps):
        want = (g + eps) / (g + eps / math.sqrt(1 - b2**t))
        assert ratio[t - 1] == pytest.approx(want, rel=1e-4), t
    assert ratio[0] < 0.1  # eps_1 = 31.6 eps: the first Keras step is 16x shorter
    checkpoints = [ratio[t - 1] for t in (1, 10, 100, 1000, steps)]
    assert checkpoints == sorted(checkpoints)
    assert ratio[-1] > 0.998


def test_state_is_lazy_and_zeroed_state_is_fresh():
    w0 = torch.tensor(W0)
    warm = w0.clone().requires_grad_()
    opt = KerasAdam([warm], lr=LR, eps=EPS, weight_decay=0.1)
    assert len(opt.state) == 0
    run_steps(opt, warm, GRADS[:3])
    state = opt.state[warm]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["step"].dtype == torch.float32 and state["step"].dim() == 0
    assert float(state["step"]) == 3
    with torch.no_grad():  # what the fast path does after its eager warm-up
        warm.copy_(w0)
        for v in state.values():
            v.zero_()
    fresh = w0.clone().requires_grad_()
    got = run_steps(opt, warm, GRADS)
    want = run_steps(KerasAdam([fresh], lr=LR, eps=EPS, weight_decay=0.1), fresh, GRADS)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_masked_weights_stay_exactly_zero():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    mask = torch.rand(layer.weight.shape) >= 0.5
    with torch.no_grad():
        layer.weight.mul_(mask)
    opt = KerasAdam(layer.parameters(), lr=1e-2, eps=1e-7, weight_decay=0.1)
    masked = [(layer.weight, mask.float())]
    start = layer.weight.detach().clone()
    for _ in range(20):
        x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
        masked_update(nn.functional.cross_entropy(layer(x), y), opt, masked)
    w = layer.weight.detach()
    assert torch.all(w[~mask] == 0)
    assert torch.all(opt.state[layer.weight]["exp_avg"][~mask] == 0)
    assert torch.all(opt.state[layer.weight]["exp_avg_sq"][~mask] == 0)
    assert torch.all(w[mask] != start[mask])


@pytest.mark.parametrize(
    ("optimizer", "eps_style", "want"),
    [
        ("adam", "torch", torch.optim.Adam),
        ("adam", "keras", KerasAdam),
        ("sgd", "torch", ScheduledSGD),
        ("sgd", "keras", ScheduledSGD),
    ],
)
@pytest.mark.parametrize("capturable", [False, True])
def test_factories_pick_the_form(optimizer, eps_style, want, capturable):
    spec = TrainSpec(optimizer=optimizer, eps_style=eps_style, eps=1e-3, weight_decay=0.01)
    plain = make_optimizer([torch.zeros(2, requires_grad=True)], spec)
    fast = make_fast_optimizer([torch.zeros(2, requires_grad=True)], spec, capturable=capturable)
    assert type(plain) is want and type(fast) is want
    if optimizer == "adam":
        for opt in (plain, fast):
            group = opt.param_groups[0]
            assert (group["lr"], group["eps"], group["weight_decay"]) == (spec.lr, 1e-3, 0.01)
            assert tuple(group["betas"]) == tuple(spec.betas)
        if eps_style == "torch":
            assert fast.param_groups[0]["capturable"] is capturable


def test_cuda_graph_replay_matches_eager_steps():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(257, generator=gen).to(dev)
    grads = [(torch.randn(257, generator=gen) * 1e-2).to(dev) for _ in range(6)]

    eager = w0.clone().requires_grad_()
    eager_opt = KerasAdam([eager], lr=LR, eps=EPS, weight_decay=0.01)
    for g in grads:
        eager.grad = g.clone()
        eager_opt.step()

    graphed = w0.clone().requires_grad_()
    graphed.grad = torch.zeros_like(graphed)
    opt = KerasAdam([graphed], lr=LR, eps=EPS, weight_decay=0.01)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # eager warm-up creates the state, then it is reset to fresh
        for _ in range(3):
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        graphed.copy_(w0)
        for v in opt.state[graphed].values():
            v.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for g in grads:
        graphed.grad.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(graphed, eager)
    for k, v in eager_opt.state[eager].items():
        assert torch.equal(opt.state[graphed][k], v), k
    assert float(opt.state[graphed]["step"]) == len(grads)


def _tiny_round(spec: TrainSpec, fast: bool):
    cfg = tiny_trial()
    data = load_dataset(cfg.dataset)
    model = build_model(cfg.model, cfg.dataset.synthetic_shape, data.num_classes, cfg.seed)
    masks = dense_masks(model)
    g = torch.Generator().manual_seed(1)
    for k in list(masks)[:-1]:
        masks[k] = torch.rand(masks[k].shape, generator=g) >= 0.5
    apply_masks(model, masks)
    gen = torch.Generator().manual_seed(5)
    if fast:
        options = FastPathOptions(graph=False, capturable=True)
        return train_fast(model, masks, data, spec, (2, "ep"), gen, (3, "it"), options)
    return train(model, masks, data, spec, (2, "ep"), gen, rewind_at=(3, "it"))


def test_fast_path_matches_plain_loop_in_keras_form():
    spec = dataclasses.replace(tiny_trial().train, eps_style="keras", eps=1e-3, weight_decay=1e-3)
    plain, fast = _tiny_round(spec, fast=False), _tiny_round(spec, fast=True)
    for name in ("final", "best", "rewind"):
        a, b = getattr(plain, name), getattr(fast, name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert plain.curve == fast.curve
    torch_form = _tiny_round(dataclasses.replace(spec, eps_style="torch"), fast=False)
    assert any(not torch.equal(torch_form.final[k], plain.final[k]) for k in plain.final)


# ----------------------------------------------------------------------------------------------
# ScheduledSGD: torch.optim.SGD's arithmetic with a per-step learning-rate table.


@pytest.mark.parametrize(
    ("momentum", "nesterov", "wd"), [(0.0, False, 0.0), (0.9, False, 1e-4), (0.9, True, 5e-4)]
)
def test_scheduled_sgd_follows_torch_sgd_step_by_step(momentum, nesterov, wd):
    """Same trajectory as torch.optim.SGD given the same learning rate per step (within float32
    rounding of lr * d, which torch fuses into one multiply-add)."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(50, generator=g)
    grads = [torch.randn(50, generator=g) for _ in range(8)]
    lrs = torch.tensor([0.0, 0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001])
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours = ScheduledSGD([a], lrs, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    ref = torch.optim.SGD([b], lr=0.1, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for lr, grad in zip(lrs.tolist(), grads):
        ref.param_groups[0]["lr"] = lr
        for p, opt in ((a, ours), (b, ref)):
            p.grad = grad.clone()
            opt.step()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(a, w0)


def test_scheduled_sgd_holds_the_last_rate_past_the_table():
    w = torch.ones(3, requires_grad=True)
    opt = ScheduledSGD([w], torch.tensor([1.0, 0.5]))
    for _ in range(4):
        w.grad = torch.ones(3)
        opt.step()
    assert torch.allclose(w, torch.full((3,), 1.0 - 1.0 - 0.5 - 0.5 - 0.5))


def test_scheduled_sgd_zeroed_state_is_fresh():
    """The fast path zeroes optimizer state after its warm-up: step count and momentum restart."""
    w = torch.ones(4, requires_grad=True)
    opt = ScheduledSGD([w], torch.tensor([0.0, 1.0]), momentum=0.9)
    w.grad = torch.ones(4)
    opt.step()
    for v in opt.state[w].values():
        v.zero_()
    w.grad = torch.ones(4)
    opt.step()  # lr[0] = 0 again: nothing moves
    assert torch.equal(w, torch.ones(4))


def test_momentum_and_weight_decay_never_resurrect_a_pruned_weight():
    """Masked SGD with momentum 0.9 and weight decay: pruned weights stay exactly zero and their
    momentum buffers too (the buffer of a weight pruned after earlier steps would otherwise keep
    pushing it). Without the gradient mask the buffer fills; without the weight mask it moves."""
    torch.manual_seed(0)
    layer = nn.Linear(20, 5)
    mask = torch.rand(5, 20) > 0.5
    spec = TrainSpec(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    opt = make_optimizer(layer.parameters(), spec)
    x = torch.randn(64, 20)
    for _ in range(3):  # dense steps first: the momentum buffers fill everywhere
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    assert bool((opt.state[layer.weight]["momentum_buffer"][~mask] != 0).all())
    with torch.no_grad():
        layer.weight.mul_(mask)
    opt = make_optimizer(layer.parameters(), spec)  # each round a fresh optimizer
    masked = [(layer.weight, mask.float())]
    for _ in range(5):
        masked_update(layer(x).square().mean(), opt, masked)
    assert bool((layer.weight[~mask] == 0).all())
    assert bool((opt.state[layer.weight]["momentum_buffer"][~mask] == 0).all())
    assert bool((layer.weight[mask] != 0).all())


@pytest.mark.parametrize("eps", [1e-7, 1e-8, 1e-10])
def test_the_fast_cpu_sqrt_gives_the_same_floats_as_the_plain_one(eps):
    """Second moments that are 0 (pruned weights), subnormal or normal: sqrt(v) + eps unchanged."""
    from lth_ray.lottery.optim import _sqrt_plus

    tiny = torch.finfo(torch.float32).tiny
    special = torch.tensor([0.0, tiny / 8, tiny / 2, tiny, 1e-37, 1e-30, 1e-20, 1e-12, 1.0])
    v = torch.cat([special, torch.rand(10_000) * 10.0 ** torch.randint(-45, 2, (10_000,))])
    v[::3] = 0.0
    fast, plain = _sqrt_plus(v, eps), v.sqrt().add_(eps)
    assert torch.equal(fast.view(torch.int32), plain.view(torch.int32))  # bit for bit


def test_keras_adam_steps_of_a_masked_weight_equal_the_plain_formula_bit_for_bit():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(64, 32))
    mask = (torch.rand(64, 32) > 0.5).float()
    with torch.no_grad():
        w.mul_(mask)
    ref = w.detach().clone()
    m, v = torch.zeros_like(ref), torch.zeros_like(ref)
    opt = KerasAdam([w], lr=1e-3, eps=1e-7)
    b1, b2 = 0.9, 0.999
    for t in range(1, 6):
        g = torch.randn(64, 32) * 1e-3 * mask
        w.grad = g.clone()
        opt.step()
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = torch.tensor(float(t))
        lr_t = (1.0 - torch.pow(b2, step)).sqrt_().div_(1.0 - torch.pow(b1, step)).mul_(1e-3)
        ref.sub_(m.div(v.sqrt().add_(1e-7)).mul_(lr_t))
        assert torch.equal(w.detach(), ref), t
    assert torch.all(w.detach()[mask == 0] == 0)
