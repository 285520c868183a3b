"""The learning-rate schedule as a pure function of the step, per round, against hand-computed
values: warmup, milestones, cosine, resuming at the rewind point k, fine-tuning's final rate."""

from __future__ import annotations

import math

import pytest

from lth_ray.lottery import schedule
from lth_ray.specs import TrainSpec
from tests.helpers import tiny_trial, with_changes

SGD = {"optimizer": "sgd", "lr": 0.1}


def test_warmup_and_milestones_hand_computed_table():
    """10 iterations per epoch; warmup 5it; x0.1 at 2ep (= 20it) and at 30it (open_lth's rules:
    lr * min(1, t / W), gamma ** #milestones <= t)."""
    t = TrainSpec(**SGD, warmup="5it", milestones=["2ep", "30it"], gamma=0.1)
    lr_at = schedule.lr_function(t, per_epoch=10, horizon=40)
    table = {0: 0.0, 1: 0.02, 4: 0.08, 5: 0.1, 19: 0.1, 20: 0.01, 29: 0.01, 30: 0.001, 39: 0.001}
    for step, want in table.items():
        assert lr_at(step) == pytest.approx(want, rel=1e-12), step


def test_milestones_in_any_order_and_warmup_in_epochs():
    t = TrainSpec(**SGD, warmup="1ep", milestones=["30it", "2ep"], gamma=0.5)
    lr_at = schedule.lr_function(t, per_epoch=10, horizon=40)
    assert [lr_at(s) for s in (0, 5, 10, 25, 35)] == pytest.approx([0, 0.05, 0.1, 0.05, 0.025])


def test_cosine_hand_computed():
    t = TrainSpec(**SGD, lr_schedule="cosine")
    lr_at = schedule.lr_function(t, per_epoch=10, horizon=40)
    want = {0: 0.1, 10: 0.1 * (1 + math.cos(math.pi / 4)) / 2, 20: 0.05, 40: 0.0, 50: 0.0}
    for step, v in want.items():
        assert lr_at(step) == pytest.approx(v, abs=1e-15)
    warm = schedule.lr_function(TrainSpec(**SGD, lr_schedule="cosine", warmup="8it"), 10, 40)
    assert warm(4) == pytest.approx(0.05) and warm(8) == pytest.approx(0.1)
    assert warm(24) == pytest.approx(0.05)  # half-way through the 32 post-warmup steps


def _cfg(mode: str, rewind: str = "10it"):
    cfg = tiny_trial(rewind=rewind, retrain_mode=mode)  # 400 train examples, batch 50: 8 per epoch
    return with_changes(
        cfg,
        **{
            "train.optimizer": "sgd",
            "train.lr": 0.1,
            "train.initial": "40it",
            "train.retrain": "40it",
            "train.milestones": ["20it", "30it"],
        },
    )


def test_round_zero_runs_the_whole_schedule():
    lrs = schedule.learning_rates(_cfg("weight_rewind"), 0, 400)
    assert lrs == pytest.approx([0.1] * 20 + [0.01] * 10 + [0.001] * 10)


@pytest.mark.parametrize("mode", ["weight_rewind", "lr_rewind"])
def test_rewinding_resumes_the_schedule_at_k(mode):
    cfg = _cfg(mode)
    assert schedule.round_start(cfg, 1, 400) == 10
    assert schedule.learning_rates(cfg, 1, 400) == pytest.approx(
        [0.1] * 10 + [0.01] * 10 + [0.001] * 10
    )  # T - k = 30 steps, from step 10 on


def test_rewinding_to_init_restarts_the_schedule():
    cfg = _cfg("lr_rewind", rewind="init")
    assert schedule.round_start(cfg, 1, 400) == 0
    assert schedule.learning_rates(cfg, 1, 400) == schedule.learning_rates(cfg, 0, 400)


def test_finetune_trains_the_remaining_steps_at_the_final_rate():
    lrs = schedule.learning_rates(_cfg("finetune"), 1, 400)
    assert lrs == pytest.approx([0.001] * 30)
    full = with_changes(_cfg("finetune"), **{"prune.rewind_budget": "full"})
    assert schedule.learning_rates(full, 2, 400) == pytest.approx([0.001] * 40)


def test_rewind_points_in_epochs_count_iterations_per_epoch():
    cfg = with_changes(_cfg("weight_rewind", rewind="1ep"), **{"train.milestones": ["2ep"]})
    assert schedule.round_start(cfg, 1, 400) == 8
    lrs = schedule.learning_rates(cfg, 1, 400)
    assert len(lrs) == 32 and lrs[:8] == pytest.approx([0.1] * 8) and lrs[8] == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"warmup": "ten"}, "train.warmup"),
        ({"milestones": ["1ep", "x"]}, "train.milestones[1]"),
        ({"gamma": 0.0}, "train.gamma"),
        ({"lr_schedule": "cosine", "milestones": ["1ep"]}, "train.milestones"),
        ({"nesterov": True, "momentum": 0.0}, "train.nesterov"),
        ({"optimizer": "adam", "warmup": "5it"}, "train.warmup"),
        ({"optimizer": "adam", "milestones": ["5it"]}, "train.milestones"),
    ],
)
def test_schedule_problems_name_the_field(changes, field):
    t = TrainSpec(**{**SGD, **changes})
    problem = schedule.lr_schedule_problem(t)
    assert problem is not None and problem[0] == field
    assert schedule.lr_schedule_problem(TrainSpec(**SGD, milestones=["1ep"])) is None
