import os

import pytest
import torch

from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.models import build_model, weight_layers
from lth_ray.lottery.pruning import apply_masks, dense_masks
from lth_ray.lottery.train import batches_per_epoch, evaluate, make_optimizer, plain_step, train
from lth_ray.specs import TrainSpec
from tests.helpers import tiny_trial


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_trial().dataset)


def half_masks(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = dense_masks(model)
    for name in list(masks)[:-1]:
        masks[name] = torch.rand(masks[name].shape, generator=g) > 0.5
    return masks


@pytest.mark.parametrize(
    "spec",
    [
        TrainSpec(optimizer="adam", lr=1e-2, batch_size=50, device="cpu"),
        TrainSpec(optimizer="adam", lr=1e-2, batch_size=50, device="cpu", weight_decay=1e-2),
        TrainSpec(optimizer="sgd", lr=1e-1, batch_size=50, device="cpu", weight_decay=1e-2),
        TrainSpec(optimizer="adam", lr=1e-2, batch_size=50, device="cpu", precision="bf16"),
    ],
    ids=["adam", "adam-wd", "sgd-wd", "adam-bf16"],
)
def test_pruned_weights_stay_exactly_zero(data, spec):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=1)
    masks = half_masks(model)
    apply_masks(model, masks)
    result = train(model, masks, data, spec, (2, "ep"), torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    for name, m in masks.items():
        for state in (result.best, result.final, dict(model.state_dict())):
            assert torch.count_nonzero(state[name][~m]) == 0, name
        # survivors did train
        assert torch.count_nonzero(params[name][m]) == int(m.sum())


def test_adam_moments_never_see_pruned_weights(data):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=1)
    masks = half_masks(model)
    apply_masks(model, masks)
    spec = TrainSpec(lr=1e-2, batch_size=50, device="cpu")
    opt = make_optimizer(model.parameters(), spec)
    step = plain_step(model, masks, opt, spec, torch.device("cpu"))
    for i in range(5):
        step(data.train_x[i * 50 : (i + 1) * 50], data.train_y[i * 50 : (i + 1) * 50])
    params = dict(model.named_parameters())
    for name, m in masks.items():
        st = opt.state[params[name]]
        assert torch.count_nonzero(st["exp_avg"][~m]) == 0
        assert torch.count_nonzero(st["exp_avg_sq"][~m]) == 0
        assert torch.count_nonzero(st["exp_avg"][m]) > 0


def test_best_final_and_curve(data):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=2)
    spec = TrainSpec(lr=3e-3, batch_size=50, device="cpu")
    result = train(
        model,
        dense_masks(model),
        data,
        spec,
        (4, "ep"),
        torch.Generator().manual_seed(0),
        rewind_at=(1, "ep"),
    )
    assert len(result.curve) == 4
    losses = [e.val_loss for e in result.curve]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.best_val_loss == min(losses)
    # best weights reproduce the best validation loss; final weights are the model's
    model.load_state_dict(result.best)
    loss, acc = evaluate(model, data.val_x, data.val_y, spec, torch.device("cpu"))
    assert loss == pytest.approx(result.best_val_loss, rel=1e-5)
    assert acc == pytest.approx(result.best_val_acc)
    assert result.curve[-1].iteration == 4 * batches_per_epoch(len(data.train_x), spec)
    assert result.rewind is not None
    assert not torch.equal(
        result.rewind[weight_layers(model)[0].name], result.final[weight_layers(model)[0].name]
    )
    assert result.images == 4 * len(data.train_x) and result.images_per_s > 0


def test_iteration_budget_and_partial_epoch(data):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=2)
    spec = TrainSpec(lr=3e-3, batch_size=50, device="cpu")
    per_epoch = batches_per_epoch(len(data.train_x), spec)
    result = train(
        model,
        dense_masks(model),
        data,
        spec,
        (per_epoch + 3, "it"),
        torch.Generator().manual_seed(0),
    )
    assert [e.iteration for e in result.curve] == [per_epoch, per_epoch + 3]
    assert result.images == per_epoch * 50 + 3 * 50


def test_training_is_deterministic_on_cpu(data):
    cfg = tiny_trial()
    outs = []
    for _ in range(2):
        model = build_model(cfg.model, data.input_shape, data.num_classes, seed=3)
        r = train(
            model,
            dense_masks(model),
            data,
            TrainSpec(batch_size=50, device="cpu"),
            (1, "ep"),
            torch.Generator().manual_seed(5),
        )
        outs.append(r)
    for k in outs[0].final:
        assert torch.equal(outs[0].final[k], outs[1].final[k])
    assert outs[0].curve[0].val_loss == outs[1].curve[0].val_loss


def test_learns_synthetic_data(data):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=0)
    spec = TrainSpec(lr=3e-3, batch_size=50, device="cpu")
    before = evaluate(model, data.test_x, data.test_y, spec, torch.device("cpu"))[1]
    train(model, dense_masks(model), data, spec, (3, "ep"), torch.Generator().manual_seed(0))
    after = evaluate(model, data.test_x, data.test_y, spec, torch.device("cpu"))[1]
    assert after > max(0.5, before + 0.3)


def test_precision_auto_is_bf16_on_cuda_and_fp32_elsewhere():
    from lth_ray.lottery.train import resolve_precision

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    assert TrainSpec().precision == "auto"
    assert (resolve_precision("auto", cuda), resolve_precision("auto", cpu)) == ("bf16", "fp32")
    for explicit in ("fp32", "tf32", "bf16"):
        assert resolve_precision(explicit, cuda) == resolve_precision(explicit, cpu) == explicit


def test_deterministic_switch_is_set_either_way():
    import torch

    from lth_ray.lottery.train import set_determinism

    had = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    try:
        set_determinism(TrainSpec(deterministic=True))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")
        set_determinism(TrainSpec(deterministic=False))  # a reused worker: the next trial's choice
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        if not had:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _train_tiny(data, spec, steps, seed=0):
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=1)
    masks = half_masks(model)
    apply_masks(model, masks)
    return train(model, masks, data, spec, steps, torch.Generator().manual_seed(seed))


def test_evaluation_interval_in_iterations(data):
    """Frankle & Carbin's early stopping: validation every k iterations, best weights at that
    resolution; the end of training is always evaluated."""
    spec = TrainSpec(lr=1e-2, batch_size=50, device="cpu", eval_every="3it")
    per_epoch = batches_per_epoch(len(data.train_x), spec)  # 8 here
    result = _train_tiny(data, spec, (2, "ep"))
    its = [e.iteration for e in result.curve]
    assert per_epoch == 8 and its == [3, 6, 9, 12, 15, 16]
    assert [e.epoch for e in result.curve] == [1 + (i - 1) // per_epoch for i in its]
    best = min(result.curve, key=lambda e: e.val_loss)
    assert (result.best_iteration, result.best_epoch) == (best.iteration, best.epoch)
    # the best weights are exactly the weights after best_iteration steps
    again = _train_tiny(
        data, TrainSpec(lr=1e-2, batch_size=50, device="cpu"), (best.iteration, "it")
    )
    for k, v in result.best.items():
        assert torch.equal(v, again.final[k]), k
    # the default interval is one epoch: the same training, fewer evaluations
    per_ep = _train_tiny(data, TrainSpec(lr=1e-2, batch_size=50, device="cpu"), (2, "ep"))
    assert [e.iteration for e in per_ep.curve] == [per_epoch, 2 * per_epoch]
    for k, v in per_ep.final.items():
        assert torch.equal(v, result.final[k]), k
    assert result.images == per_ep.images == 2 * len(data.train_x)


def test_evaluation_interval_on_the_fast_path_matches_the_plain_loop(data):
    from lth_ray.lottery.fastpath import FastPathOptions, train_fast

    spec = TrainSpec(lr=1e-2, batch_size=64, device="cpu", eval_every="5it")  # a partial batch
    plain = _train_tiny(data, spec, (2, "ep"))
    cfg = tiny_trial()
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=1)
    masks = half_masks(model)
    apply_masks(model, masks)
    fast = train_fast(
        model, masks, data, spec, (2, "ep"), torch.Generator().manual_seed(0),
        options=FastPathOptions(graph=False),
    )  # fmt: skip
    assert [(e.epoch, e.iteration) for e in fast.curve] == [
        (e.epoch, e.iteration) for e in plain.curve
    ]
    assert [e.val_loss for e in fast.curve] == pytest.approx(
        [e.val_loss for e in plain.curve], rel=1e-5
    )
    assert fast.best_iteration == plain.best_iteration
