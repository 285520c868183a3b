import pytest
import torch

import lth_ray.lottery.trial as lottery
from lth_ray.lottery import schedule
from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.pruning import prune_count, schedule_remaining
from lth_ray.lottery.trial import LotteryTrial
from lth_ray.sweep.store import SweepStore
from tests.helpers import tiny_trial, with_changes


@pytest.fixture(scope="module")
def data():
    return load_dataset(tiny_trial().dataset)


def prunable_total(trial):
    return sum(trial.state.masks[n].numel() for n in trial.names)


def test_iterative_prunes_exact_counts_and_nests(data):
    cfg = tiny_trial(rounds=3, fraction=0.3)
    trial = LotteryTrial(cfg, data)
    active = prunable_total(trial)
    previous = {k: v.clone() for k, v in trial.state.masks.items()}
    trial.run_round()
    for _ in range(3):
        rec = trial.run_round()
        expected = prune_count(active, 0.3)
        assert rec["pruned"] == expected
        active -= expected
        assert rec["active_weights"] == active
        assert rec["sparsity"] == pytest.approx(1 - active / prunable_total(trial))
        assert rec["weights_remaining"] == pytest.approx(100 * active / prunable_total(trial))
        for k, m in trial.state.masks.items():
            assert not (m & ~previous[k]).any()  # nothing regrows
        previous = {k: v.clone() for k, v in trial.state.masks.items()}
    # the excluded output layer is never pruned
    out = [n for n in trial.state.masks if n not in trial.names]
    assert out and all(bool(trial.state.masks[n].all()) for n in out)
    assert trial.done and len(trial.state.history) == 4


def test_layerwise_fractions_per_kind(data):
    cfg = tiny_trial(
        scope="layerwise",
        exclude=[],
        layer_fractions={"conv": 0.1, "fc": 0.2, "output": 0.05},
        rounds=1,
    )
    trial = LotteryTrial(cfg, data)
    before = {n: int(trial.state.masks[n].sum()) for n in trial.names}
    trial.run_round()
    trial.run_round()
    for n in trial.names:
        kind = trial.layers[n].kind
        frac = {"conv": 0.1, "fc": 0.2, "output": 0.05}[kind]
        assert before[n] - int(trial.state.masks[n].sum()) == prune_count(before[n], frac), n


def test_one_shot_and_iterative_share_the_sparsity_grid(data):
    it = LotteryTrial(tiny_trial(rounds=3), data)
    os_ = LotteryTrial(tiny_trial(rounds=3, schedule="one_shot"), data)
    it.run()
    os_.run()
    assert [r["active_weights"] for r in it.state.history] == [
        r["active_weights"] for r in os_.state.history
    ]
    plan = schedule_remaining(prunable_total(it), 0.3, 3, "global")
    assert [r["active_weights"] for r in os_.state.history[1:]] == plan
    # one-shot prunes the dense net each round: the round-3 mask is not the iterative one
    assert any(not torch.equal(it.state.masks[n], os_.state.masks[n]) for n in it.names)


def test_one_shot_scores_the_dense_weights(data):
    trial = LotteryTrial(tiny_trial(rounds=2, schedule="one_shot"), data)
    trial.run_round()
    dense_final = {k: v.clone() for k, v in trial.state.score_final.items()}
    trial.run_round()
    trial.run_round()
    for k, v in dense_final.items():
        assert torch.equal(trial.state.score_final[k], v)
    # magnitude one-shot: survivors are the largest dense weights
    w = torch.cat([dense_final[n].abs().flatten() for n in trial.names])
    keep = torch.cat([trial.state.masks[n].flatten() for n in trial.names])
    assert w[keep].min() >= w[~keep].max()


def capture_start_weights(monkeypatch):
    """Record the weights each training run starts from."""
    starts = []
    real_train = lottery.fit

    def spy(model, masks, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_train(model, masks, *args, **kwargs)

    monkeypatch.setattr(lottery, "fit", spy)
    return starts


def test_rewind_restores_theta0_for_survivors(data, monkeypatch):
    starts = capture_start_weights(monkeypatch)
    trial = LotteryTrial(tiny_trial(rounds=2), data)
    trial.run()
    assert len(starts) == 3
    for r, start in enumerate(starts):
        for name, theta in trial.theta0.items():
            if name in trial.state.masks and r > 0:
                m = trial.state.masks[name] if r == 2 else None
                if m is not None:
                    assert torch.equal(start[name][m], theta[m])
                    assert torch.count_nonzero(start[name][~m]) == 0
            else:
                assert torch.equal(start[name], theta), (r, name)


def test_late_rewind_uses_epoch_k_weights(data, monkeypatch):
    starts = capture_start_weights(monkeypatch)
    trial = LotteryTrial(tiny_trial(rounds=1, rewind="1ep"), data)
    trial.run()
    rewind = trial.state.rewind
    name = trial.names[0]
    m = trial.state.masks[name]
    assert not torch.equal(rewind[name], trial.theta0[name])
    assert torch.equal(starts[1][name][m], rewind[name][m])


def test_reinit_control_keeps_mask_changes_init(data, monkeypatch):
    starts = capture_start_weights(monkeypatch)
    ticket = LotteryTrial(tiny_trial(rounds=1), data)
    ticket.run()
    control = LotteryTrial(tiny_trial(rounds=1, control="reinit"), data)
    control.run()
    for n in control.names:  # the control prunes with the ticket's mask
        assert torch.equal(ticket.state.masks[n], control.state.masks[n])
    # control round 1 trains the ticket (theta_0) and then a fresh init under the same mask
    ticket_start, reinit_start = starts[3], starts[4]
    n = control.names[0]
    m = control.state.masks[n]
    assert torch.equal(ticket_start[n][m], control.theta0[n][m])
    assert not torch.equal(reinit_start[n][m], control.theta0[n][m])
    assert torch.count_nonzero(reinit_start[n][~m]) == 0
    rec = control.state.history[1]
    assert rec["ticket_test_acc"] == pytest.approx(ticket.state.history[1]["test_acc"])


def test_stability_skips_when_best_equals_final(data):
    trial = LotteryTrial(tiny_trial(criterion="stability", rounds=1), data)
    trial.run_round()
    trial.state.score_best = {k: v.clone() for k, v in trial.state.score_final.items()}
    rec = trial.run_round()
    assert rec["skipped"] == 1 and rec["pruned"] == 0 and rec["sparsity"] == 0.0


def test_stability_prunes_the_least_stable(data):
    trial = LotteryTrial(tiny_trial(criterion="stability", rounds=1), data)
    trial.run_round()
    best = {n: trial.state.score_best[n].clone() for n in trial.names}
    final = {n: trial.state.score_final[n].clone() for n in trial.names}
    if all(torch.equal(best[n], final[n]) for n in trial.names):  # dense best epoch was the last
        for n in trial.names:
            trial.state.score_best[n] = final[n] + torch.randn_like(final[n]) * 1e-2
            best[n] = trial.state.score_best[n]
    rec = trial.run_round()
    assert rec["skipped"] == 0 and rec["pruned"] > 0
    delta = torch.cat([(best[n] - final[n]).abs().flatten() for n in trial.names])
    keep = torch.cat([trial.state.masks[n].flatten() for n in trial.names])
    assert delta[~keep].min() >= delta[keep].max()


def test_same_seed_same_metrics_different_seed_differs(data):
    a = LotteryTrial(tiny_trial(rounds=1), data)
    b = LotteryTrial(tiny_trial(rounds=1), data)
    c = LotteryTrial(with_changes(tiny_trial(rounds=1), seed=1), data)
    for t in (a, b, c):
        t.run()
    drop = ("train_seconds", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(a.state.history) == strip(b.state.history)
    assert strip(a.state.history) != strip(c.state.history)


def test_resume_from_checkpoint_is_equivalent(data, tmp_path):
    cfg = tiny_trial(rounds=3, criterion="random")
    straight = LotteryTrial(cfg, data)
    straight.run()

    first = LotteryTrial(cfg, data)
    first.run_round()
    first.run_round()
    SweepStore(str(tmp_path)).save_state(
        "ckpt", {"trial": first.checkpoint()}
    )  # the sweep's format
    del first
    resumed = LotteryTrial(cfg, data)
    resumed.restore(SweepStore(str(tmp_path)).load_state("ckpt")["trial"])
    assert resumed.state.rounds_done == 2
    resumed.run()
    drop = ("train_seconds", "images_per_s")
    for x, y in zip(straight.state.history, resumed.state.history):
        assert {k: v for k, v in x.items() if k not in drop} == {
            k: v for k, v in y.items() if k not in drop
        }
    for k in straight.state.masks:
        assert torch.equal(straight.state.masks[k], resumed.state.masks[k])
    for k in straight.state.last_final:
        assert torch.equal(straight.state.last_final[k], resumed.state.last_final[k])


def test_checkpoint_refuses_another_config(data):
    a = LotteryTrial(tiny_trial(rounds=1), data)
    a.run_round()
    b = LotteryTrial(tiny_trial(rounds=2), data)
    with pytest.raises(ValueError, match="different trial configuration"):
        b.restore(a.checkpoint())


def test_records_have_the_promised_fields(data):
    trial = LotteryTrial(tiny_trial(rounds=1), data)
    trial.run()
    rec = trial.state.history[1]
    for key in (
        "round",
        "sparsity",
        "weights_remaining",
        "sparsity_all",
        "test_acc",
        "test_loss",
        "test_acc_final",
        "test_loss_final",
        "val_loss_best",
        "val_acc_best",
        "best_epoch",
        "skipped",
        "train_seconds",
        "images_per_s",
        "compression_ratio",
        "flops_reduction",
    ):
        assert key in rec, key
    assert any(k.startswith("sparsity/") for k in rec)
    assert rec["compression_ratio"] > 1 and rec["flops_reduction"] > 1
    assert 0 < rec["sparsity_all"] < rec["sparsity"]
    assert len(trial.state.curves[1]) == 2


def capture_masks(monkeypatch):
    """Record the masks each training run trains under."""
    masks = []
    real_train = lottery.fit

    def spy(model, m, *args, **kwargs):
        masks.append({k: v.detach().clone().cpu() for k, v in m.items()})
        return real_train(model, m, *args, **kwargs)

    monkeypatch.setattr(lottery, "fit", spy)
    return masks


def test_random_mask_control_keeps_per_layer_sparsity(data, monkeypatch):
    trained = capture_masks(monkeypatch)
    starts = capture_start_weights(monkeypatch)
    control = LotteryTrial(tiny_trial(rounds=2, control="random_mask"), data)
    control.run()
    # runs: round 0 (ticket), round 1 ticket + control, round 2 ticket + control
    for ticket_run, control_run in ((1, 2), (3, 4)):
        ticket_m, random_m = trained[ticket_run], trained[control_run]
        for n in control.names:
            assert int(random_m[n].sum()) == int(ticket_m[n].sum())  # same per-layer count
            assert not torch.equal(random_m[n], ticket_m[n])  # but another subnetwork
        excluded = set(ticket_m) - set(control.names)
        assert excluded and all(bool(random_m[n].all()) for n in excluded)
        # trained from the ticket's start weights (theta_0 here), masked by the random mask
        n = control.names[0]
        m = random_m[n]
        assert torch.equal(starts[control_run][n][m], control.theta0[n][m])
        assert torch.count_nonzero(starts[control_run][n][~m]) == 0
    # the trial's own masks (what the next level prunes from) stay the ticket's
    assert torch.equal(control.state.masks[control.names[0]], trained[3][control.names[0]])


def test_repeated_controls_draw_independently(data, monkeypatch):
    trained = capture_masks(monkeypatch)
    for k in (0, 1):
        LotteryTrial(tiny_trial(rounds=1, control="random_mask", control_index=k), data).run()
    first, second = trained[2], trained[5]  # each trial: round 0, ticket, control
    n = next(iter(first))
    assert not all(torch.equal(first[k], second[k]) for k in first)
    assert int(first[n].sum()) == int(second[n].sum())


def test_reinit_draws_are_independent_across_seeds_and_rounds(data, monkeypatch):
    """A control's fresh init derives from (seed, round, index): seed 0 at round 2 must not reuse
    seed 1's round-1 initialisation (as a `seed + round` offset would)."""
    starts = capture_start_weights(monkeypatch)
    LotteryTrial(tiny_trial(rounds=2, control="reinit"), data).run()
    s0_round2 = starts[4]
    starts.clear()
    LotteryTrial(with_changes(tiny_trial(rounds=1, control="reinit"), seed=1), data).run()
    s1_round1 = starts[2]
    n = next(iter(s0_round2))
    # where both are unmasked, independent draws give different weights
    both = s0_round2[n].ne(0) & s1_round1[n].ne(0)
    assert both.any() and not torch.equal(s0_round2[n][both], s1_round1[n][both])


def test_one_shot_removes_per_round_and_ranks_among_all_dense_weights(data):
    trial = LotteryTrial(
        tiny_trial(rounds=2, schedule="one_shot", criterion="large_init_large_final"), data
    )
    trial.run()
    active = [r["active_weights"] for r in trial.state.history]
    # `pruned` is what each level removed relative to the previous level, not from dense
    assert [r["pruned"] for r in trial.state.history[1:]] == [
        active[0] - active[1],
        active[1] - active[2],
    ]
    # the round-2 mask ranks all dense weights (not only round 1's survivors)
    dense = {k: torch.ones_like(v) for k, v in trial.state.masks.items()}
    from lth_ray.lottery.pruning import CRITERIA, ScoreContext, prune_to

    c = ScoreContext(
        init={n: trial.theta0[n] for n in trial.names},
        best={},
        final={n: trial.state.score_final[n] for n in trial.names},
        masks=dense,
        generator=torch.Generator(),
    )
    scores = CRITERIA.get("large_init_large_final")(c, trial.names)
    expected, _ = prune_to(scores, dense, trial.names, active[2], "global")
    for n in trial.names:
        assert torch.equal(trial.state.masks[n], expected[n])


def test_movement_under_late_rewinding_compares_with_the_rewind_point(data):
    trial = LotteryTrial(tiny_trial(rounds=1, criterion="movement", rewind="1ep"), data)
    trial.run_round()
    s = trial.state
    moved = torch.cat([(s.score_final[n] - s.rewind[n]).abs().flatten() for n in trial.names])
    from_init = torch.cat(
        [(s.score_final[n] - trial.theta0[n]).abs().flatten() for n in trial.names]
    )
    trial.run_round()
    keep = torch.cat([s.masks[n].flatten() for n in trial.names])
    assert moved[keep].min() >= moved[~keep].max()  # survivors moved most since the rewind point
    assert not (from_init[keep].min() >= from_init[~keep].max())  # not the theta_0 ranking


def test_late_rewinding_trains_the_remaining_steps(data):
    """After rewinding to step k, a round trains T - k steps (the papers); `full` trains T."""
    cfg = with_changes(tiny_trial(rounds=1, rewind="1ep"), **{"train.retrain": "3ep"})
    remaining = LotteryTrial(cfg, data)
    remaining.run()
    assert [r["epochs"] for r in remaining.state.history] == [2, 2]  # initial 2ep; 3ep - 1ep
    full = LotteryTrial(with_changes(cfg, **{"prune.rewind_budget": "full"}), data)
    full.run()
    assert [r["epochs"] for r in full.state.history] == [2, 3]
    per_epoch = schedule.batches_per_epoch(len(data.train_x), cfg.train)
    mixed = with_changes(cfg, **{"prune.rewind": "3it"})
    assert schedule.round_steps(mixed, 1, len(data.train_x)) == (3 * per_epoch - 3, "it")
    assert schedule.round_steps(mixed, 0, len(data.train_x)) == (2, "ep")


def test_a_rewind_point_past_round_zero_in_other_units_is_refused(data):
    cfg = tiny_trial(rounds=1, rewind="5000it")  # round 0 is 2ep: 16 iterations here
    with pytest.raises(ValueError, match="prune.rewind.*beyond round 0"):
        LotteryTrial(cfg, data)
    short = with_changes(tiny_trial(rounds=1, rewind="2ep"), **{"train.retrain": "16it"})
    with pytest.raises(ValueError, match="leaves no training"):
        LotteryTrial(short, data)


TIMING = {"train_seconds", "images_per_s"}


def _same_records(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in TIMING} == {
            k: v for k, v in rb.items() if k not in TIMING
        }


def test_a_shared_trunk_and_shared_ticket_masks_change_no_number(data, one_thread):
    """Round 0 trained once by a trunk (for another criterion, capturing several rewind points)
    and a control fed its ticket's masks give exactly the records of trials that compute all."""
    cfg = tiny_trial(rounds=2, rewind="1ep")
    alone = LotteryTrial(cfg, data)
    alone.run()
    trunk_owner = LotteryTrial(with_changes(cfg, **{"prune.criterion": "random"}), data)
    trunk = trunk_owner.train_trunk([(1, "ep"), (3, "it")])
    assert set(trunk.rewinds) == {(1, "ep"), (3, "it")}
    shared = LotteryTrial(cfg, data)
    shared.start_from_trunk(trunk)
    shared.run()
    _same_records(alone.state.history, shared.state.history)
    for k, v in alone.state.masks.items():
        assert torch.equal(v, shared.state.masks[k])

    control_cfg = with_changes(cfg, **{"prune.control": "reinit"})
    control_alone = LotteryTrial(control_cfg, data)
    control_alone.run()
    masks_by_level, ticket = [], LotteryTrial(cfg, data)
    ticket.run(
        lambda rec, t: masks_by_level.append({k: v.clone() for k, v in t.state.masks.items()})
    )
    control = LotteryTrial(control_cfg, data)
    control.start_from_trunk(trunk)
    for r in (1, 2):
        control.run_control_round(masks_by_level[r], ticket.state.history[r])
    _same_records(control_alone.state.history, control.state.history)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_a_one_shot_level_one_is_its_iterative_tickets(data, one_thread, scope):
    """Pruning the dense net once to level 1 is the ticket's first prune: a one-shot trial that
    adopts the ticket's level 1 and goes on gives the records of one that computes it."""
    cfg = tiny_trial(rounds=2, scope=scope)
    if scope == "layerwise":
        cfg.prune.exclude = []
    ticket = LotteryTrial(cfg, data)
    ticket.run()
    one_cfg = with_changes(cfg, **{"prune.schedule": "one_shot"})
    alone = LotteryTrial(one_cfg, data)
    alone.run()
    _same_records(alone.state.history[:2], ticket.state.history[:2])
    adopted = LotteryTrial(one_cfg, data)
    adopted.run_round()
    level1 = LotteryTrial(cfg, data)
    level1.run_round()
    level1.run_round()
    s = level1.state
    adopted.adopt_level(s.masks, s.history[1], s.curves[1], s.last_final)
    adopted.run()
    _same_records(alone.state.history, adopted.state.history)
    for k, v in alone.state.masks.items():
        assert torch.equal(v, adopted.state.masks[k])
    with pytest.raises(ValueError, match="one-shot"):
        level1.adopt_level(s.masks, s.history[1], s.curves[1], s.last_final)
