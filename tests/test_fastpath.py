"""The fast path's epoch driver and step against the plain loop of lth_ray.lottery.train.

On CPU the step runs eagerly (no graph), so these compare exactly: same permutation, same masked
step, same records. The graph itself is checked on a GPU (tests/test_fastpath_checks.py and the CUDA
test below, skipped without one).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.fastpath import FastPathOptions, StepProgram, build_program, train_fast
from lth_ray.lottery.fit import fit
from lth_ray.lottery.models import build_model
from lth_ray.lottery.pruning import apply_masks, dense_masks
from lth_ray.lottery.train import make_optimizer, train
from lth_ray.specs import DatasetSpec, ModelSpec, TrainSpec

CPU = torch.device("cpu")
NO_GRAPH = FastPathOptions(graph=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    # 240 training examples: 7 full batches of 32 and a 16-example tail.
    spec = DatasetSpec(
        name="synthetic",
        val_size=50,
        synthetic_train=290,
        synthetic_test=40,
        synthetic_shape=[3, 8, 8],
    )
    return load_dataset(spec)


def _model_and_masks(sparsity: float = 0.5, seed: int = 0):
    model = build_model(ModelSpec(arch="conv2", width=0.125), (3, 8, 8), 10, seed)
    masks = dense_masks(model)
    g = torch.Generator().manual_seed(1)
    for k in list(masks)[:-1]:
        masks[k] = torch.rand(masks[k].shape, generator=g) >= sparsity
    apply_masks(model, masks)
    return model, masks


def _run(fast: bool, data, spec: TrainSpec, steps, rewind_at=None, options=NO_GRAPH):
    model, masks = _model_and_masks()
    gen = torch.Generator().manual_seed(5)
    if fast:
        return train_fast(
            model, masks, data, spec, steps, gen, rewind_at=rewind_at, options=options
        ), masks
    return train(model, masks, data, spec, steps, gen, rewind_at=rewind_at), masks


def _same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("steps", [(3, "ep"), (18, "it")])
def test_driver_matches_plain_loop_exactly(data, drop_last, steps):
    spec = TrainSpec(batch_size=32, lr=1e-3, drop_last=drop_last)
    plain, masks = _run(False, data, spec, steps, rewind_at=(10, "it"))
    fast, _ = _run(True, data, spec, steps, rewind_at=(10, "it"))
    assert _same_state(plain.final, fast.final)
    assert _same_state(plain.best, fast.best)
    assert plain.rewind is not None and _same_state(plain.rewind, fast.rewind)
    assert plain.curve == fast.curve  # losses, accuracies, epochs, iterations
    assert (plain.best_epoch, plain.best_iteration, plain.images) == (
        fast.best_epoch,
        fast.best_iteration,
        fast.images,
    )
    per_epoch = 7 if drop_last else 8
    expected_iters = steps[0] * per_epoch if steps[1] == "ep" else steps[0]
    assert fast.curve[-1].iteration == expected_iters
    for k, m in masks.items():
        assert bool((fast.final[k][~m] == 0).all())


def test_driver_with_fewer_examples_than_a_batch(data):
    spec = TrainSpec(batch_size=500, lr=1e-3)
    plain, _ = _run(False, data, spec, (2, "ep"))
    fast, _ = _run(True, data, spec, (2, "ep"))
    assert _same_state(plain.final, fast.final) and plain.curve == fast.curve
    assert fast.images == 2 * len(data.train_x)


def test_sgd_driver_matches(data):
    spec = TrainSpec(optimizer="sgd", batch_size=32, lr=1e-2, momentum=0.9)
    plain, _ = _run(False, data, spec, (2, "ep"))
    fast, _ = _run(True, data, spec, (2, "ep"))
    assert _same_state(plain.final, fast.final)


def test_channels_last_changes_layout_only(data):
    spec = TrainSpec(batch_size=32, lr=1e-3)
    plain, _ = _run(False, data, spec, (2, "it"))
    fast, masks = _run(
        True, data, spec, (2, "it"), options=FastPathOptions(graph=False, channels_last=True)
    )
    # fp32 NHWC and NCHW kernels differ in summation order only (~2^-24 relative per add); after
    # two Adam steps the largest weight gap measured 7e-9 (AVX-512), 1.5e-8 (AVX2) and 9e-10
    # (no SIMD), so the bound leaves ~70x of room on any x86 CPU while a layout bug moves
    # weights by ~lr = 1e-3.
    for k in plain.final:
        assert fast.final[k].is_contiguous()  # states come back in the default layout
        torch.testing.assert_close(fast.final[k], plain.final[k], rtol=1e-4, atol=1e-6)
    for k, m in masks.items():
        assert bool((fast.final[k][~m] == 0).all())


def test_step_draws_batches_in_permutation_order_and_wraps():
    n, bs = 10, 4
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    y = torch.zeros(n, dtype=torch.int64)
    model = build_model(ModelSpec(arch="conv2", width=0.125), (3, 8, 8), 10, 0)
    seen: list[list[int]] = []
    model.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0][:, 0, 0, 0].long().tolist())
    )
    spec = TrainSpec(batch_size=bs)
    program = StepProgram(
        model, dense_masks(model), x, y, spec, make_optimizer(model.parameters(), spec)
    )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    program.start_epoch(perm)
    for _ in range(3):
        program.run()
    assert seen[0] == perm[0:4].tolist() and seen[1] == perm[4:8].tolist()
    assert seen[2] == perm[[8, 9, 0, 1]].tolist()  # never out of range: the offset wraps
    program.start_epoch(perm.flip(0))
    program.run()
    assert (
        seen[3] == perm.flip(0)[:4].tolist()
    )  # a new epoch starts at the front of its permutation
    assert int(program.offset) == bs


def test_moments_never_see_pruned_weights(data):
    model, masks = _model_and_masks(sparsity=0.7)
    spec = TrainSpec(batch_size=32, lr=1e-2)
    program = build_program(model, masks, data, spec, NO_GRAPH)
    program.start_epoch(torch.randperm(len(data.train_x)))
    for _ in range(4):
        program.run()
    params = dict(model.named_parameters())
    for name, m in masks.items():
        state = program.optimizer.state[params[name]]
        assert bool((state["exp_avg"][~m] == 0).all()) and bool(
            (state["exp_avg_sq"][~m] == 0).all()
        )
        assert bool((params[name][~m] == 0).all())
        assert bool((state["exp_avg_sq"][m] > 0).any())  # the active weights did train
    loss_sum, correct = program.sums.tolist()
    assert loss_sum > 0 and 0 <= correct <= 4 * 32


def test_graph_is_refused_without_cuda(data):
    model, masks = _model_and_masks()
    with pytest.raises(ValueError, match="CUDA"):
        build_program(model, masks, data, TrainSpec(), FastPathOptions(graph=True))
    program = build_program(
        model, masks, data, TrainSpec(), FastPathOptions()
    )  # auto: eager on CPU
    assert program.graph is None
    with pytest.raises(ValueError, match="CUDA"):
        program.capture()


def test_train_keeps_the_plain_path_on_cpu(data, monkeypatch):
    import lth_ray.lottery.fastpath

    def boom(*args, **kwargs):
        raise AssertionError("the fast path must not run on CPU")

    monkeypatch.setattr(lth_ray.lottery.fastpath, "train_fast", boom)
    model, masks = _model_and_masks()
    result = fit(
        model,
        masks,
        data,
        TrainSpec(batch_size=32, fast_path="auto"),
        (1, "ep"),
        torch.Generator().manual_seed(0),
    )
    assert result.curve[-1].iteration == 8


# ----------------------------------------------------------------------------------------------
# On a GPU: `fit` takes the graphed fast path (rounds compared in detail: test_fastpath_checks.py).

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_train_dispatches_to_the_graph_on_cuda(data):
    model, masks = _model_and_masks()
    model = model.cuda()
    masks = {k: v.cuda() for k, v in masks.items()}
    spec = TrainSpec(batch_size=32, lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    graphed = fit(model, masks, data.to("cuda"), spec, (2, "ep"), gen)
    model2, masks2 = _model_and_masks()
    plain = train(
        model2.cuda(),
        {k: v.cuda() for k, v in masks2.items()},
        data.to("cuda"),
        dataclasses.replace(spec, fast_path="off"),
        (2, "ep"),
        torch.Generator().manual_seed(5),
    )
    assert [e.iteration for e in graphed.curve] == [e.iteration for e in plain.curve]
    for x, y in zip(graphed.curve, plain.curve):
        assert abs(x.train_loss - y.train_loss) < 1e-2


def test_channels_last_is_the_default_for_bf16_on_cuda_only():
    from lth_ray.lottery.fastpath import use_channels_last

    cuda = torch.device("cuda")  # a device object needs no GPU
    auto = FastPathOptions()
    assert use_channels_last(auto, TrainSpec(), cuda)  # precision auto -> bf16 on CUDA
    assert use_channels_last(auto, TrainSpec(precision="bf16"), cuda)
    assert not use_channels_last(auto, TrainSpec(precision="fp32"), cuda)
    assert not use_channels_last(auto, TrainSpec(precision="tf32"), cuda)
    assert not use_channels_last(auto, TrainSpec(precision="bf16"), CPU)
    assert not use_channels_last(FastPathOptions(channels_last=False), TrainSpec(), cuda)
    assert use_channels_last(FastPathOptions(channels_last=True), TrainSpec(), CPU)
