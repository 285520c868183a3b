"""Today's protocols in the lottery trial: a BatchNorm ResNet trained with SGD, a step schedule and
flip + crop; weight rewinding, learning-rate rewinding and fine-tuning (Renda et al. 2020); BatchNorm
rewound with the weights, re-drawn by reinit, never pruned; shared work changing no number."""

from __future__ import annotations

import pytest
import torch

import lth_ray.lottery.trial as lottery
from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.trial import LotteryTrial
from tests.helpers import tiny_trial, with_changes

TIMING = {"train_seconds", "images_per_s"}
pytestmark = pytest.mark.usefixtures("one_thread")


def modern(mode: str = "weight_rewind", rewind: str = "3it", **prune) -> lottery.TrialConfig:
    """A 2-filter ResNet-20 on 8x8 synthetic images; 8 steps per epoch."""
    cfg = tiny_trial(rounds=2, rewind=rewind, retrain_mode=mode, exclude=[], **prune)
    return with_changes(
        cfg,
        **{
            "model.arch": "cifar_resnet_20",
            "model.init": "kaiming_normal",
            "model.width": 0.125,
            "dataset.augment": ["crop", "flip"],
            "train.optimizer": "sgd",
            "train.lr": 0.1,
            "train.momentum": 0.9,
            "train.weight_decay": 1e-4,
            "train.initial": "16it",
            "train.retrain": "16it",
            "train.warmup": "2it",
            "train.milestones": ["8it", "12it"],
        },
    )


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_trial().dataset)


@pytest.fixture
def spy(monkeypatch):
    """Every fit call: the model's state at its start and the arguments it was given."""
    calls = []
    real = lottery.fit

    def fit(model, masks, *args, **kwargs):
        calls.append(
            {**kwargs, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        )
        result = real(model, masks, *args, **kwargs)
        calls[-1]["final"] = {k: v.detach().clone() for k, v in result.final.items()}
        return result

    monkeypatch.setattr(lottery, "fit", fit)
    return calls


def _bn_keys(state):
    return [k for k in state if ".bn" in k or k.startswith("bn.") or ".shortcut.1." in k]


def test_batchnorm_state_is_rewound_with_the_weights(data, spy, one_thread):
    trial = LotteryTrial(modern(), data)
    trial.run()
    rewind, keys = trial.state.rewind, _bn_keys(trial.state.rewind)
    assert any(k.endswith("running_mean") for k in keys)
    assert not torch.equal(rewind["bn.running_mean"], trial.theta0["bn.running_mean"])
    for r in (1, 2):
        for k in keys:  # BatchNorm starts every pruned round where it was at step k
            assert torch.equal(spy[r]["weights"][k], rewind[k]), (r, k)
    assert spy[1]["weights"]["bn.num_batches_tracked"] == 3
    for n in trial.names:  # and only conv/linear weights carry masks
        assert ".bn" not in n
    assert all(spy[r]["weights"][k].abs().sum() > 0 for r in (1, 2) for k in keys if "weight" in k)


def test_rounds_resume_schedule_and_data_at_k(data, spy):
    trial = LotteryTrial(modern(), data)
    trial.run()
    assert [c["start"] for c in spy] == [0, 3, 3]
    lrs0, lrs1 = spy[0]["lrs"], spy[1]["lrs"]
    assert len(lrs0) == 16 and len(lrs1) == 13 and torch.equal(lrs1, lrs0[3:])
    assert lrs0[:3].tolist() == pytest.approx([0.0, 0.05, 0.1])
    assert lrs0[8].item() == pytest.approx(0.01) and lrs0[12].item() == pytest.approx(0.001)


@pytest.mark.parametrize("mode", ["lr_rewind", "finetune"])
def test_lr_rewind_and_finetune_start_from_the_final_weights(data, spy, mode):
    trial = LotteryTrial(modern(mode), data)
    trial.run()
    for r in (1, 2):
        start, before = spy[r]["weights"], spy[r - 1]["final"]
        for k, v in start.items():
            if k in trial.state.masks and k in trial.names:
                continue
            assert torch.equal(v, before[k]), (r, k)  # BatchNorm and unpruned layers: kept
        n = trial.names[0]
        m = start[n] != 0
        assert torch.equal(start[n][m], before[n][m])  # survivors keep their trained values
        assert int((~m).sum()) > 0
    lrs = spy[1]["lrs"]
    if mode == "lr_rewind":
        assert torch.equal(lrs, spy[0]["lrs"][3:])
    else:
        assert len(lrs) == 13 and bool((lrs == spy[0]["lrs"][-1]).all())
        assert lrs[0].item() == pytest.approx(0.001)


def test_reinit_control_draws_batchnorm_afresh(data, spy):
    control = LotteryTrial(modern(control="reinit"), data)
    control.run()
    ticket_start, reinit_start = (
        spy[1]["weights"],
        spy[2]["weights"],
    )  # round 1: ticket, then control
    fresh = lottery.build_model(
        control.cfg.model,
        data.input_shape,
        data.num_classes,
        lottery.derive_seed(*control._draw(1, "reinit"), "init"),
    ).state_dict()
    for k in _bn_keys(fresh):
        assert torch.equal(reinit_start[k], fresh[k]), k
    assert not torch.equal(reinit_start["bn.weight"], ticket_start["bn.weight"])
    assert bool((reinit_start["bn.running_var"] == 1).all())


def _same_records(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_shared_trunk_and_control_masks_are_bit_identical(data, one_thread, mode="lr_rewind"):
    """BatchNorm + SGD + schedule + augmentation: a shared trunk, and a random-mask control fed
    its ticket's masks (and, under lr_rewind, the weights it pruned), change no number."""
    cfg = modern(mode)
    alone = LotteryTrial(cfg, data)
    alone.run()
    trunk = LotteryTrial(with_changes(cfg, **{"prune.retrain_mode": "finetune"}), data)
    trunk = trunk.train_trunk([(3, "it"), (5, "it")])
    shared = LotteryTrial(cfg, data)
    shared.start_from_trunk(trunk)
    shared.run()
    _same_records(alone.state.history, shared.state.history)

    control_cfg = with_changes(cfg, **{"prune.control": "random_mask"})
    control_alone = LotteryTrial(control_cfg, data)
    control_alone.run()
    levels, ticket = [], LotteryTrial(cfg, data)
    ticket.run(
        lambda rec, t: levels.append(
            ({k: v.clone() for k, v in t.state.masks.items()}, t.state.history[-1], t.pruned_from)
        )
    )
    control = LotteryTrial(control_cfg, data)
    control.start_from_trunk(trunk)
    for r in (1, 2):
        masks, record, kept = levels[r]
        control.run_control_round(masks, record, kept if mode != "weight_rewind" else None)
    _same_records(control_alone.state.history, control.state.history)


def test_a_control_under_lr_rewind_needs_its_tickets_weights(data):
    control = LotteryTrial(modern("lr_rewind", control="reinit"), data)
    control.run_round()
    with pytest.raises(ValueError, match="needs the weights its ticket pruned"):
        control.run_control_round(control.state.masks, control.state.history[0])


def test_resume_mid_protocol_is_bit_identical(data, one_thread):
    cfg = modern("lr_rewind")
    full = LotteryTrial(cfg, data)
    full.run()
    first = LotteryTrial(cfg, data)
    first.run_round()
    first.run_round()
    ckpt = first.checkpoint()
    resumed = LotteryTrial(cfg, data)
    resumed.restore(ckpt)
    resumed.run()
    _same_records(full.state.history, resumed.state.history)


def test_a_ticket_hands_its_controls_the_weights_it_pruned(data, tmp_path):
    """Through the sweep's storage: a ticket publishes each level's masks and, under lr_rewind,
    the weights it pruned; its random-mask control trained from them reports what a control
    trial that computes the ticket itself reports."""
    from lth_ray.sweep.plan import Unit
    from lth_ray.sweep.store import SweepStore
    from lth_ray.sweep.trainable import next_round, publish_level

    cfg = modern("lr_rewind")  # 2 pruned rounds: level 2 starts from the ticket's level-1 net
    units = SweepStore(str(tmp_path))
    ticket = LotteryTrial(cfg, data)
    while not ticket.done:
        ticket.run_round()
        publish_level(units, "ticket", ticket)
    dense_final = LotteryTrial(cfg, data).train_trunk([]).final
    level2 = units.load_level("ticket", 2)["kept"]
    assert not torch.equal(level2["conv.weight"], dense_final["conv.weight"])
    control_cfg = with_changes(cfg, **{"prune.control": "random_mask"})
    alone = LotteryTrial(control_cfg, data)
    alone.run()
    control = LotteryTrial(control_cfg, data)
    control.run_round()
    unit = Unit("control", "control", control_cfg.to_dict(), masks_from="ticket")
    next_round(control, unit, units)
    next_round(control, unit, units)
    _same_records(alone.state.history, control.state.history)
