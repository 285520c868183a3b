"""The benchmark's pieces: measurements, packing, ratios and their printout, overhead."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lth_ray.bench import overhead, suite
from lth_ray.bench.__main__ import main
from lth_ray.bench.throughput import StepCase, measure, measure_packed, random_splits
from lth_ray.config.grid import expand_trials
from lth_ray.config.load import load_ablation

CPU = torch.device("cpu")
TINY = {"width": 0.125, "n_train": 240}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_splits_shape_and_device():
    d = random_splits(50, CPU)
    assert d.train_x.shape == (50, 3, 32, 32) and d.train_y.shape == (50,)
    assert 0 <= float(d.train_x.min()) and float(d.train_x.max()) < 1 and int(d.train_y.max()) < 10


@pytest.mark.parametrize("kind", ["plain", "program"])
def test_measure_counts_whole_steps(kind):
    case = StepCase("t", kind=kind, batch_size=60, **TINY)
    r = measure(case, CPU, seconds=0.05)
    assert r["steps"] >= 2 and r["images"] == 60 * r["steps"]
    assert r["images_per_s"] == pytest.approx(r["images"] / r["seconds"])
    assert r["graphed"] is False  # no graph on CPU
    assert "peak_reserved_mib" not in r  # GPU memory is reported on CUDA only


def test_measure_rejects_too_small_a_dataset():
    with pytest.raises(ValueError, match="n_train"):
        measure(StepCase("t", batch_size=60, width=0.125, n_train=30), CPU, 0.01)


def test_packed_processes_run_concurrently_and_add_up():
    case = StepCase("t", batch_size=60, **TINY)
    r = measure_packed(case, 2, CPU, seconds=0.3, timeout=120)
    assert "error" not in r, r
    assert r["processes"] == 2 and len(r["per_process_images_per_s"]) == 2
    assert r["images"] % 60 == 0 and r["images_per_s"] == pytest.approx(r["images"] / r["seconds"])
    # the span covers both workers, so the aggregate cannot exceed the sum of their own rates
    assert r["images_per_s"] <= sum(r["per_process_images_per_s"]) * 1.001
    assert r["threads_per_process"] == 1


def _fake_result(naive=100.0, single=250.0, ceiling=1000.0, packed=(600.0,), sweep=None):
    def row(kind, name, ips, procs=1):
        return {
            "kind": kind,
            "processes": procs,
            "images_per_s": ips,
            "case": {"name": name},
            "label": kind,
        }

    rows = [
        row("naive", "naive", naive),
        row("single", "single fp32", single),
        row("ceiling", "ceiling bf16", ceiling),
    ]
    rows += [
        row("packed", f"packed x{4 * (i + 1)} fp32", p, 4 * (i + 1)) for i, p in enumerate(packed)
    ]
    ratios = {
        "single_vs_naive": single / naive,
        "single_vs_ceiling": single / ceiling,
        "fastest_single": "fp32",
        "fastest_single_vs_naive": single / naive,
        "fastest_single_vs_ceiling": single / ceiling,
        "packed": [
            {
                "name": r["case"]["name"],
                "processes": r["processes"],
                "vs_naive": r["images_per_s"] / naive,
                "vs_ceiling": r["images_per_s"] / ceiling,
            }
            for r in rows[3:]
        ],
        "best_packed": rows[3]["case"]["name"] if packed else None,
        "best_packed_vs_ceiling": max(packed) / ceiling if packed else None,
    }
    return {
        "device": {"type": "cuda", "name": "Test GPU", "torch": "x", "cuda": "y"},
        "rows": rows,
        "naive": naive,
        "ceiling": ceiling,
        "ceiling_case": "ceiling bf16",
        "ratios": ratios,
        "overhead": sweep or {"skipped": "--no-sweep"},
    }


def test_report_lines_ratios_and_targets():
    sweep = overhead.summarise(
        102.0, [{"rounds": 2, "train_seconds": 100.0, "round_seconds": 101.0}]
    )
    lines = suite.report_lines(_fake_result(sweep=sweep))
    ratio_lines = [line for line in lines if "ratio" in line]
    assert any(
        "single-trial step / naive reference ratio: 2.50x" in line and "not met" in line
        for line in ratio_lines
    )
    assert any(
        "packed x4 fp32 aggregate / naive ratio: 6.00x; / ceiling ratio: 0.60" in line
        for line in ratio_lines
    )
    assert any(
        "best packed" in line and "0.60" in line and "this run on Test GPU: met" in line
        for line in ratio_lines
    )
    assert any(
        "overhead ratio" in line and "2.0%" in line and "Test GPU: met" in line
        for line in ratio_lines
    )
    table = [line for line in lines if line.startswith("packed x4")]
    assert table and "6.00x" in table[0] and "0.60" in table[0]


def test_report_lines_without_sweep_or_packing_say_so():
    lines = suite.report_lines(_fake_result(packed=()))
    assert any("overhead ratio: not measured (--no-sweep)" in line for line in lines)
    assert not any(line.startswith("best packed") for line in lines)


def test_overhead_summary_splits_the_time():
    s = overhead.summarise(
        50.0,
        [
            {"rounds": 2, "train_seconds": 10.0, "round_seconds": 14.0},
            {"rounds": 2, "train_seconds": 20.0, "round_seconds": 25.0},
        ],
    )
    assert s["trials"] == 2 and s["rounds"] == 4
    assert s["overhead"] == pytest.approx(50 / 30 - 1)
    assert s["outside_trials_s"] == pytest.approx(11.0) and s[
        "in_trial_eval_prune_s"
    ] == pytest.approx(9.0)
    assert "overhead" not in overhead.summarise(5.0, [])


@pytest.mark.parametrize("quick", [True, False])
def test_overhead_sweep_is_a_valid_ablation(tmp_path, quick):
    spec = overhead.sweep_ablation("cpu", trials=3, epochs=2, rounds=1, gpu=0.0, quick=quick)
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(spec))
    ab = load_ablation(path)
    assert ab.tune.max_concurrent == 1 and ab.train.initial == "2ep"
    assert [t.seed for t in expand_trials(ab)] == [0, 1, 2]


def test_overhead_skips_cleanly_without_ray_or_mlflow(monkeypatch):
    monkeypatch.setattr(overhead, "missing_packages", lambda: ["ray"])
    r = overhead.measure_overhead(quick=True)
    assert "skipped" in r and "ray" in r["skipped"]


def test_quick_plan_is_small_on_cpu():
    plan = suite.Plan.for_device(CPU, quick=True)
    assert plan.quick and plan.budget_s is not None and plan.budget_s < 60
    cases = plan.cases()
    assert (
        cases["naive"].kind == "plain"
        and cases["naive"].precision == "fp32"
        and cases["naive"].batch_size == 60
    )
    assert all(c.batch_size > cases["naive"].batch_size for c in cases["ceiling"])


def test_cli_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(
        [
            "--quick",
            "--device",
            "cpu",
            "--no-sweep",
            "--packed",
            "",
            "--seconds",
            "0.05",
            "--n-train",
            "240",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    ratio_lines = [line for line in printed.splitlines() if "ratio" in line]
    assert len(ratio_lines) >= 4
    data = json.loads(out.read_text())
    assert data["device"]["type"] == "cpu"
    assert data["naive"] > 0 and data["ceiling"] > 0
    assert data["ratios"]["single_vs_naive"] == pytest.approx(data["single"] / data["naive"])
    assert {r["kind"] for r in data["rows"]} == {"naive", "single", "ceiling"}


def test_report_notes_when_the_large_batch_is_no_ceiling():
    assert not any(line.startswith("note:") for line in suite.report_lines(_fake_result()))
    lines = suite.report_lines(_fake_result(packed=(1200.0,)))
    assert any(line.startswith("note: packed x4 fp32 ran faster") for line in lines)


def test_vmapped_program_trains_each_model_like_its_own_step():
    from lth_ray.bench.vmapped import VmapProgram
    from lth_ray.lottery.fastpath import StepProgram
    from lth_ray.lottery.models import build_model
    from lth_ray.lottery.pruning import apply_masks, dense_masks
    from lth_ray.lottery.train import make_optimizer
    from lth_ray.specs import ModelSpec, TrainSpec

    n = 100
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)
    spec = TrainSpec(batch_size=20, lr=1e-3)

    def model_and_masks(seed):
        m = build_model(ModelSpec(arch="conv2", width=0.25), (3, 8, 8), 10, seed)
        masks = dense_masks(m)
        mg = torch.Generator().manual_seed(seed + 1)
        for k in list(masks)[:-1]:
            masks[k] = torch.rand(masks[k].shape, generator=mg) > 0.5
        apply_masks(m, masks)
        return m, masks

    perms = torch.stack(
        [torch.randperm(n, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )
    pairs = [model_and_masks(0), model_and_masks(1)]
    vm = VmapProgram([m for m, _ in pairs], [k for _, k in pairs], x, y, spec)
    vm.start_epoch(perms)
    for _ in range(3):
        vm.run()
    for i, seed in enumerate((0, 1)):
        model, masks = model_and_masks(seed)
        single = StepProgram(model, masks, x, y, spec, make_optimizer(model.parameters(), spec))
        single.start_epoch(perms[i])
        for _ in range(3):
            single.run()
        for name, p in model.named_parameters():
            torch.testing.assert_close(vm.params[name][i], p.detach(), rtol=1e-4, atol=1e-6)
        for name, m in masks.items():
            assert bool((vm.params[name][i][~m] == 0).all())
        torch.testing.assert_close(vm.sums[i], single.sums, rtol=1e-5, atol=1e-5)


def test_measure_vmap_counts_every_model():
    r = measure(StepCase("v", kind="vmap", models=3, batch_size=60, **TINY), CPU, seconds=0.05)
    assert r["images"] == 3 * 60 * r["steps"] and r["label"].startswith("vmap x3")


def test_measure_streams_counts_every_model_and_trains_each_apart():
    from lth_ray.bench.throughput import _Runner

    case = StepCase("s", kind="streams", models=3, batch_size=60, **TINY)
    r = measure(case, CPU, seconds=0.05)
    assert r["images"] == 3 * 60 * r["steps"] and r["label"].startswith("3 streams, eager")
    runner = _Runner(case, CPU)
    assert len(runner.programs) == 3 and runner.streams == [None] * 3  # no CUDA: no streams
    runner.warm(2)
    firsts = [next(p.model.parameters()).detach().clone() for p in runner.programs]
    assert not torch.equal(firsts[0], firsts[1])  # seeds 0, 1, 2: three different trials
    assert all(int(p.offset) == 2 * 60 for p in runner.programs)  # each program stepped twice


def test_overhead_projection_onto_a_study_trial():
    trials = [
        {
            "rounds": 2,
            "train_seconds": 4.0,
            "round_seconds": 5.0,
            "bookkeeping_seconds": 0.4,
            "energy_wh": 0.5,
        },
        {
            "rounds": 2,
            "train_seconds": 4.0,
            "round_seconds": 5.0,
            "bookkeeping_seconds": 0.6,
            "system_metrics": ["system/a"],
        },
    ]
    s = overhead.summarise(30.0, trials, fit_s=18.0, images=80_000)
    assert s["train_images_per_s"] == pytest.approx(10_000)
    assert s["per_round_bookkeeping_s"] == pytest.approx(1.0 / 4)
    assert s["per_trial_fixed_s"] == pytest.approx((18.0 - 10.0 - 1.0) / 2)
    assert s["study_trial_train_s"] == pytest.approx(401 * 45_000 / 10_000)
    assert s["study_trial_overhead_s"] == pytest.approx(3.5 + 16 * 0.25)
    assert s["projected_study_overhead"] == pytest.approx(7.5 / 1804.5)
    assert s["energy_wh_per_trial"] == [0.5] and s["system_metrics_logged"] == ["system/a"]
    lines = suite.report_lines(_fake_result(sweep=s))
    assert any(
        line.startswith("projected Ray + MLflow overhead ratio for one study trial")
        and "0.42%" in line
        and "met" in line
        for line in lines
    )
    assert any("3.5 s fixed + 0.25 s per round" in line for line in lines)
    assert "projected_study_overhead" not in overhead.summarise(30.0, trials, fit_s=18.0)


def test_report_lines_compare_each_one_process_engine_with_packing():
    result = _fake_result(packed=(600.0,))
    result["ratios"].update(
        streams=[{"name": "streams x8 bf16", "models": 8, "vs_naive": 9.0, "vs_ceiling": 0.9}],
        best_streams="streams x8 bf16",
        best_streams_vs_best_packed=1.5,
    )
    lines = suite.report_lines(result)
    assert any(line.startswith("streams x8 bf16 aggregate / naive ratio: 9.00x") for line in lines)
    assert any(
        "best streams (streams x8 bf16) / best packed" in line
        and "1.50 -> one process, many streams faster" in line
        for line in lines
    )


def test_vmap_measures_a_layout_pair_once_and_default_is_what_a_trial_runs():
    cases = [
        StepCase("single bf16", precision="bf16"),
        StepCase("single bf16+cl", precision="bf16", channels_last=True),
        StepCase("single fp32"),
    ]
    unique = suite._unique_nchw(cases)
    assert [(c.precision, c.channels_last) for c in unique] == [("bf16", False), ("fp32", False)]
    singles = {"fp32": {}, "bf16": {}, "bf16+cl": {}}
    assert suite.Plan(torch.device("cuda")).default_key(singles) == "bf16+cl"  # precision auto
    assert suite.Plan(CPU).default_key(singles) == "fp32"


@pytest.mark.parametrize("quick", [True, False])
def test_sharing_sweep_shares_round_zero_and_the_ticket(tmp_path, quick):
    from lth_ray.sweep.plan import build_plan

    spec = overhead.sharing_ablation("cpu", epochs=1, rounds=2, gpu=0.0, quick=quick)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    trials = expand_trials(load_ablation(path))
    assert len(trials) == 5  # 2 tickets, 2 one-shot, 1 reinit control
    plan = build_plan(trials)
    assert plan.counts() == {"trunk": 1, "ticket": 2, "one_shot": 2, "control": 1}
    # round 0 once, two levels per trial unit but the one-shot baselines' level 1 (their tickets')
    assert plan.epochs == 1 + 5 * 2 - 2 and plan.unshared_epochs == 5 * 1 + 6 * 2


@pytest.mark.parametrize("quick", [True, False])
def test_branching_sweep_plans_the_critical_paths_its_ratio_assumes(tmp_path, quick):
    from lth_ray.bench import branches
    from lth_ray.sweep.plan import build_plan

    rounds = 3
    spec = branches.branching_ablation(tickets=2, rounds=rounds, epochs=1, quick=quick)
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(spec))
    trials = expand_trials(load_ablation(path))
    level, whole = build_plan(trials), build_plan(trials, branch_from="whole")
    assert level.counts() == whole.counts() == {"trunk": 2, "ticket": 2, "control": 2}
    assert level.critical_path == 1 + rounds + 1 and whole.critical_path == 1 + 2 * rounds
    assert level.epochs == whole.epochs == 2 * (1 + 2 * rounds)


def test_branching_report_says_what_was_not_measured():
    from lth_ray.bench import branches

    r = {"tickets": 1, "rounds": 4, "epochs_per_round": 1}
    r |= {"wall_level_s": 60.0, "wall_whole_s": 90.0, "tune_level_s": 50.0, "tune_whole_s": 80.0}
    r |= {"wall_ratio": 60 / 90, "tune_ratio": 50 / 80, "planned_ratio": 6 / 9}
    lines = branches.report_lines(r)
    assert "wall 0.67, Tune 0.62; planned (critical paths in levels) 0.67" in lines[-1]
    assert branches.report_lines({"error": "sweep exited with 2"}) == [
        "not measured: sweep exited with 2"
    ]
