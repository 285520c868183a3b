"""The benchmark run: which cases, measured in one process run, their ratios and the printed table.

All ratios compare numbers measured in the same run on the same device, never a stored figure: the
naive reference (eager fp32 at batch 60, the plain loop's step), the card's ceiling (the same net at a
large batch, graphed on CUDA, the fastest precision measured), the project's single-trial step (what
`train` runs for a default trial here: bf16 with channels_last, graphed, on CUDA; fp32 on CPU) and
the aggregate of N packed trials (processes; the printout says whether CUDA MPS served them).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lth_ray.bench.throughput import StepCase, describe_device, measure, measure_packed
from lth_ray.lottery.fastpath import FastPathOptions, use_channels_last
from lth_ray.lottery.train import resolve_precision
from lth_ray.specs import TrainSpec
from lth_ray.sweep.mps import HINT as MPS_HINT
from lth_ray.sweep.mps import mps_active

# Throughput targets on one H100-class card (the printout says whether this run's device met them).
TARGET_SINGLE_X_NAIVE = 3.0
TARGET_PACKED_OF_CEILING = 0.5
TARGET_OVERHEAD = 0.03


@dataclass
class Plan:
    """What to measure; `quick` shrinks everything so a 2-core CPU finishes in well under a minute."""

    device: torch.device
    quick: bool = False
    seconds: float = 3.0  # per measurement
    width: float = 1.0
    n_train: int = 45_000
    batch_size: int = 60
    ceiling_batch: int = 2048
    precisions: list[str] = field(default_factory=lambda: ["fp32", "tf32", "bf16"])
    packed: list[int] = field(default_factory=lambda: [1, 4, 8, 16])
    vmap: list[int] = field(default_factory=lambda: [8, 32])  # models per vmapped program (option)
    streams: list[int] = field(default_factory=lambda: [8, 16])  # programs on streams, one process
    sweep: bool = True
    sweep_trials: int = 2
    sweep_epochs: int = 2
    sweep_rounds: int = 1
    sweep_gpu: float = 0.125
    budget_s: float | None = 480.0  # seconds: no new packed run past budget - sweep_reserve_s
    sweep_reserve_s: float = 150.0  # kept for the overhead sweep (its timeout is what is left)
    threads: int = 1  # CPU threads per trial (a sweep trial with resources.cpu: 1 gets one)

    @classmethod
    def for_device(cls, device: torch.device, quick: bool) -> Plan:
        cuda = device.type == "cuda"
        if cuda and not quick:
            return cls(device)
        if cuda:  # quick on a GPU: the real net, shorter
            return cls(
                device,
                quick=True,
                seconds=1.0,
                packed=[1, 4],
                vmap=[4],
                streams=[4],
                sweep_trials=1,
                sweep_epochs=1,
            )
        if not quick:  # a full run on CPU: the real net, few processes
            return cls(
                device,
                seconds=5.0,
                n_train=4800,
                ceiling_batch=512,
                precisions=["fp32", "bf16"],
                packed=[1, 2],
                vmap=[2],
                streams=[2],
                sweep_trials=1,
                sweep_epochs=1,
                sweep_gpu=0.0,
            )
        return cls(
            device,
            quick=True,
            seconds=0.6,
            width=0.125,
            n_train=960,
            ceiling_batch=480,
            precisions=["fp32"],
            packed=[1, 2],
            vmap=[],
            streams=[],
            sweep_trials=1,
            sweep_epochs=1,
            sweep_gpu=0.0,
            budget_s=50.0,
            sweep_reserve_s=15.0,
        )

    def default_key(self, singles: dict[str, Any]) -> str:
        """The single-trial case a default trial runs here (`precision: auto`, fast-path options)."""
        spec = TrainSpec()  # precision auto
        key = resolve_precision(spec.precision, self.device)
        if use_channels_last(FastPathOptions(), spec, self.device):
            key += "+cl"
        return key if key in singles else next(iter(singles))

    def cases(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        common = {"width": self.width, "n_train": self.n_train}
        naive = StepCase(
            "naive", kind="plain", batch_size=self.batch_size, precision="fp32", **common
        )
        single = {
            p: StepCase(
                f"single {p}", batch_size=self.batch_size, precision=p, graph=True, **common
            )
            for p in self.precisions
        }
        if cuda and "bf16" in self.precisions:
            single["bf16+cl"] = StepCase(
                "single bf16+cl",
                batch_size=self.batch_size,
                precision="bf16",
                channels_last=True,
                **common,
            )
        extra = (
            [StepCase("eager program fp32", batch_size=self.batch_size, graph=False, **common)]
            if cuda
            else []
        )
        ceiling_n = max(self.n_train, self.ceiling_batch * 4)
        ceiling = (
            [
                StepCase(
                    "ceiling bf16+cl",
                    batch_size=self.ceiling_batch,
                    precision="bf16",
                    channels_last=True,
                    width=self.width,
                    n_train=ceiling_n,
                ),
                StepCase(
                    "ceiling bf16",
                    batch_size=self.ceiling_batch,
                    precision="bf16",
                    width=self.width,
                    n_train=ceiling_n,
                ),
                StepCase(
                    "ceiling tf32",
                    batch_size=self.ceiling_batch,
                    precision="tf32",
                    width=self.width,
                    n_train=ceiling_n,
                ),
            ]
            if cuda
            else [
                StepCase(
                    f"ceiling {p}",
                    batch_size=self.ceiling_batch,
                    precision=p,
                    width=self.width,
                    n_train=ceiling_n,
                )
                for p in (["fp32", "bf16"] if not self.quick else ["fp32"])
            ]
        )
        return {"naive": naive, "single": single, "extra": extra, "ceiling": ceiling}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def run(plan: Plan, log=print) -> dict[str, Any]:
    """Measure everything in the plan; returns the JSON-ready result (rows, ratios, overhead)."""
    s = Session(plan, log)
    torch.set_num_threads(plan.threads)
    cases = plan.cases()
    naive = s.row("naive", measure(cases["naive"], s.dev, plan.seconds))
    singles = {
        p: s.row("single", measure(c, s.dev, plan.seconds)) for p, c in cases["single"].items()
    }
    for c in cases["extra"]:
        s.row("extra", measure(c, s.dev, plan.seconds))
    ceilings = [s.row("ceiling", measure(c, s.dev, plan.seconds)) for c in cases["ceiling"]]
    ceiling = max(ceilings, key=lambda r: r["images_per_s"])
    default_key = plan.default_key(singles)
    fastest_key = max(singles, key=lambda p: singles[p]["images_per_s"])
    packed_cases = [cases["single"][default_key]]
    if cases["single"][fastest_key] not in packed_cases:
        packed_cases.append(cases["single"][fastest_key])
    packed = s.packed(packed_cases)
    engines = s.engines(packed_cases)
    default = singles[default_key]
    ratios = _ratios(naive, ceiling, default, singles, fastest_key, packed, engines)
    s.out.update(
        naive=naive["images_per_s"],
        ceiling=ceiling["images_per_s"],
        ceiling_case=ceiling["case"]["name"],
        single=default["images_per_s"],
        ratios=ratios,
    )
    if s.dev.type == "cuda":
        s.out["memory_per_trial_mib"] = {
            "single_peak_reserved": default.get("peak_reserved_mib"),
            "packed": {p["case"]["name"]: p.get("device_mib_per_trial") for p in packed},
            **{
                kind: {v["case"]["name"]: v.get("device_mib_per_trial") for v in rows}
                for kind, rows in engines.items()
            },
        }
    s.overhead()
    s.out["elapsed_s"] = s.elapsed()
    return s.out


class Session:
    """One benchmark run: its rows as they are measured, its time budget, its printout."""

    def __init__(self, plan: Plan, log) -> None:
        self.plan, self.log, self.dev = plan, log, plan.device
        self.t_start = time.perf_counter()
        self.out: dict[str, Any] = {
            "device": describe_device(self.dev),
            "plan": _plan_dict(plan),
            "rows": [],
        }
        if self.dev.type == "cuda":
            self.out["device"]["mps"] = mps_active()
        log(
            f"lth_ray.bench on {self.out['device']['name']} (torch {torch.__version__}); Conv-4 width {plan.width}, 3x32x32 random inputs, {plan.n_train} images resident"
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def over_budget(self) -> bool:
        """Past the budget, less what the sweep measurements need."""
        p = self.plan
        return p.budget_s is not None and self.elapsed() > p.budget_s - p.sweep_reserve_s

    def row(self, kind: str, result: dict[str, Any], processes: int = 1) -> dict[str, Any]:
        r = {"kind": kind, "processes": processes, **result}
        self.out["rows"].append(r)
        mem = f", {r['peak_reserved_mib']:.0f} MiB reserved" if "peak_reserved_mib" in r else ""
        self.log(
            f"  {r['case']['name']:<22} {r.get('label', ''):<40} {r.get('images_per_s', 0):>10,.0f} images/s{mem}"
        )
        return r

    def packed(self, cases: list[StepCase]) -> list[dict[str, Any]]:
        """N trial processes of each case side by side (on CUDA, sharing one GPU)."""
        plan, rows = self.plan, []
        for case in cases:
            for n in plan.packed:
                if self.over_budget():
                    self.log(
                        f"  packed x{n} {case.name}: skipped (time budget of {plan.budget_s:.0f} s)"
                    )
                    continue
                left = 300.0 if plan.budget_s is None else plan.budget_s - self.elapsed()
                res = measure_packed(
                    case,
                    n,
                    self.dev,
                    plan.seconds,
                    timeout=max(30.0, min(300.0, left)),
                    threads=plan.threads,
                )
                res.setdefault("case", {"name": case.name})
                if "error" in res:
                    self.log(f"  packed x{n} {case.name}: failed: {res['error']}")
                    self.out["rows"].append({"kind": "packed", **res})
                    continue
                if self.dev.type == "cuda":  # processes share the GPU side by side only under MPS
                    res["mps"] = self.out["device"]["mps"]
                    res["label"] += ", MPS" if res["mps"] else ", time-sliced (no MPS)"
                res["case"] = {
                    **res["case"],
                    "name": f"packed x{n} {case.precision}{'+cl' if case.channels_last else ''}",
                }
                rows.append(self.row("packed", res, n))
        return rows

    def engines(self, cases: list[StepCase]) -> dict[str, list[dict[str, Any]]]:
        """The one-process alternatives to packing processes: M trials vmapped into one program,
        or M graphed programs on M CUDA streams of one process."""
        engines: dict[str, list[dict[str, Any]]] = {"streams": [], "vmap": []}
        for kind, sizes in (("streams", self.plan.streams), ("vmap", self.plan.vmap)):
            # vmap runs NCHW only: the channels_last twin of a case would repeat the measurement
            kind_cases = cases if kind == "streams" else _unique_nchw(cases)
            for case in kind_cases:
                for m in sizes:
                    res = self._engine(kind, case, m)
                    if res is not None:
                        engines[kind].append(self.row(kind, res))
        return engines

    def _engine(self, kind: str, case: StepCase, m: int) -> dict[str, Any] | None:
        ecase = dataclasses.replace(
            case,
            name=f"{kind} x{m} {case.precision}{'+cl' if case.channels_last else ''}",
            kind=kind,
            models=m,
        )
        if self.over_budget():
            self.log(f"  {ecase.name}: skipped (time budget of {self.plan.budget_s:.0f} s)")
            return None
        try:
            res = measure(ecase, self.dev, self.plan.seconds)
        except Exception as e:  # e.g. an op without a batching rule on this torch
            self.log(f"  {ecase.name}: failed: {type(e).__name__}: {e}")
            self.out["rows"].append(
                {"kind": kind, "case": {"name": ecase.name}, "error": f"{type(e).__name__}: {e}"}
            )
            return None
        if "peak_reserved_mib" in res:
            res["device_mib_per_trial"] = res["peak_reserved_mib"] / m
        return res

    def overhead(self) -> None:
        """A short real sweep: Ray + MLflow overhead, then shared work vs --no-share."""
        plan = self.plan
        if not plan.sweep:
            self.out["overhead"] = {"skipped": "--no-sweep"}
            return
        from lth_ray.bench.overhead import measure_overhead, measure_sharing

        timeout = 600.0 if plan.budget_s is None else plan.budget_s - self.elapsed()
        if timeout < 12:
            self.out["overhead"] = {
                "skipped": f"only {max(timeout, 0):.0f} s of the time budget left; not measured"
            }
            return
        self.log(
            f"  sweep (Ray + MLflow overhead): {plan.sweep_trials} trial(s), {plan.sweep_rounds + 1} rounds of {plan.sweep_epochs} epoch(s) ..."
        )
        gpu = plan.sweep_gpu if self.dev.type == "cuda" else 0.0
        self.out["overhead"] = measure_overhead(
            device=self.dev.type,
            trials=plan.sweep_trials,
            epochs=plan.sweep_epochs,
            rounds=plan.sweep_rounds,
            gpu=gpu,
            quick=plan.quick,
            timeout=timeout,
        )
        left = timeout - self.elapsed() if plan.budget_s is not None else 600.0
        if left > 24:
            self.log("  sweep with shared work vs --no-share ...")
            self.out["sharing"] = measure_sharing(
                device=self.dev.type,
                epochs=plan.sweep_epochs,
                rounds=plan.sweep_rounds,
                gpu=gpu,
                quick=plan.quick,
                timeout=left,
            )


def _ratios(naive, ceiling, default, singles, fastest_key, packed, engines) -> dict[str, Any]:
    """Every throughput as a ratio to the naive loop and to the card's large-batch ceiling."""
    n_iy, c_iy = naive["images_per_s"], ceiling["images_per_s"]

    def vs(rows: list[dict[str, Any]], size: str, size_of) -> list[dict[str, Any]]:
        return [
            {
                "name": r["case"]["name"],
                size: size_of(r),
                "vs_naive": _ratio(r["images_per_s"], n_iy),
                "vs_ceiling": _ratio(r["images_per_s"], c_iy),
            }
            for r in rows
        ]

    ratios: dict[str, Any] = {
        "single_vs_naive": _ratio(default["images_per_s"], n_iy),
        "single_vs_ceiling": _ratio(default["images_per_s"], c_iy),
        "fastest_single": fastest_key,
        "fastest_single_vs_naive": _ratio(singles[fastest_key]["images_per_s"], n_iy),
        "fastest_single_vs_ceiling": _ratio(singles[fastest_key]["images_per_s"], c_iy),
        "packed": vs(packed, "processes", lambda r: r["processes"]),
    }
    best_packed = max(packed, key=lambda p: p["images_per_s"], default=None)
    for kind, rows in engines.items():
        ratios[kind] = vs(rows, "models", lambda r: r["case"]["models"])
        best = max(rows, key=lambda v: v["images_per_s"], default=None)
        if best:
            ratios[f"best_{kind}"] = best["case"]["name"]
            ratios[f"best_{kind}_vs_ceiling"] = _ratio(best["images_per_s"], c_iy)
        if best and best_packed:
            ratios[f"best_{kind}_vs_best_packed"] = _ratio(
                best["images_per_s"], best_packed["images_per_s"]
            )
    ratios["best_packed"] = best_packed["case"]["name"] if best_packed else None
    ratios["best_packed_vs_ceiling"] = (
        _ratio(best_packed["images_per_s"], c_iy) if best_packed else None
    )
    return ratios


def _unique_nchw(cases: list[StepCase]) -> list[StepCase]:
    seen: dict[tuple[str, int], StepCase] = {}
    for c in cases:
        seen.setdefault((c.precision, c.batch_size), dataclasses.replace(c, channels_last=False))
    return list(seen.values())


def _plan_dict(plan: Plan) -> dict[str, Any]:
    d = dict(vars(plan))
    d["device"] = str(plan.device)
    return d


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "n/a"


def _met(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= target if higher else value <= target) else "not met"


def report_lines(result: dict[str, Any]) -> list[str]:
    """The table and the ratio lines (every ratio line contains the word 'ratio')."""
    dev = result["device"]
    naive, ceiling = result["naive"], result["ceiling"]
    lines = [
        f"device: {dev['name']} | torch {dev['torch']}"
        + (f" | CUDA {dev.get('cuda')}" if dev["type"] == "cuda" else "")
        + (f" | CUDA MPS {'on' if dev['mps'] else 'off'}" if "mps" in dev else ""),
        f"{'case':<24} {'how':<42} {'procs':>5} {'images/s':>12} {'x naive':>8} {'of ceiling':>10} {'MiB/trial':>9}",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['case'].get('name', r['kind']):<24} failed: {r['error']}")
            continue
        mib = r.get("device_mib_per_trial", r.get("peak_reserved_mib"))
        lines.append(
            f"{r['case']['name']:<24} {r.get('label', ''):<42} {r['processes']:>5} {r['images_per_s']:>12,.0f} "
            f"{r['images_per_s'] / naive:>7.2f}x {r['images_per_s'] / ceiling:>10.2f} {'' if mib is None else f'{mib:9.0f}'}"
        )
    q = result["ratios"]
    on = f"on {dev['name']}"
    lines += [
        f"single-trial step / naive reference ratio: {_x(q['single_vs_naive'])} (target on one H100 >= {TARGET_SINGLE_X_NAIVE:g}x; this run {on}: {_met(q['single_vs_naive'], TARGET_SINGLE_X_NAIVE)})",
        f"single-trial step / ceiling ratio: {q['single_vs_ceiling']:.2f} (ceiling = {result['ceiling_case']}, {ceiling:,.0f} images/s)",
        f"fastest single trial ({q['fastest_single']}) / naive ratio: {_x(q['fastest_single_vs_naive'])}; / ceiling ratio: {q['fastest_single_vs_ceiling']:.2f}",
    ]
    for p in q["packed"]:
        lines.append(
            f"{p['name']} aggregate / naive ratio: {_x(p['vs_naive'])}; / ceiling ratio: {p['vs_ceiling']:.2f}"
        )
    if q["best_packed"]:
        lines.append(
            f"best packed ({q['best_packed']}) / ceiling ratio: {q['best_packed_vs_ceiling']:.2f} "
            f"(target on one H100 >= {TARGET_PACKED_OF_CEILING:g}; this run {on}: {_met(q['best_packed_vs_ceiling'], TARGET_PACKED_OF_CEILING)})"
        )
        if dev.get("mps") is False:
            lines.append(
                f"  packed processes time-slice the GPU without MPS; to pack for real, {MPS_HINT}"
            )
    for kind, winner in (("vmap", "one vmapped process"), ("streams", "one process, many streams")):
        for v in q.get(kind, []):
            lines.append(
                f"{v['name']} aggregate / naive ratio: {_x(v['vs_naive'])}; / ceiling ratio: {v['vs_ceiling']:.2f}"
            )
        if q.get(f"best_{kind}_vs_best_packed"):
            r = q[f"best_{kind}_vs_best_packed"]
            lines.append(
                f"engine ratio, best {kind} ({q[f'best_{kind}']}) / best packed ({q['best_packed']}): "
                f"{r:.2f} -> {winner if r > 1 else 'packed processes'} faster on this device"
            )
    above = [r["case"]["name"] for r in result["rows"] if r.get("images_per_s", 0) > ceiling]
    if above:
        lines.append(
            f"note: {', '.join(above)} ran faster than the large-batch step, which is therefore not "
            "this device's ceiling (expected on a CPU, where one process is not the whole machine)"
        )
    o = result.get("overhead", {})
    if "overhead" in o:
        lines.append(
            f"Ray + MLflow overhead ratio (sweep wall {o['sweep_wall_s']:.1f} s / trials' training "
            f"{o['sum_train_seconds']:.1f} s - 1, {o['trials']} trials, {o['rounds']} rounds): "
            f"{100 * o['overhead']:.1f}% (target on one H100 <= {100 * TARGET_OVERHEAD:g}%; "
            f"this run {on}: {_met(o['overhead'], TARGET_OVERHEAD, higher=False)})"
        )
        parts = [f"evaluation+pruning inside the trials {o['in_trial_eval_prune_s']:.1f} s"]
        if "startup_s" in o:
            parts.append(f"start/stop of the sweep {o['startup_s']:.1f} s (once per sweep)")
        if "per_round_bookkeeping_s" in o:
            parts.append(
                f"per trial {o['per_trial_fixed_s']:.1f} s fixed + {o['per_round_bookkeeping_s']:.2f} s "
                "per round (MLflow writes, checkpoint, Tune report)"
            )
        lines.append("  where the rest went: " + "; ".join(parts))
        if "energy_wh_per_trial" in o or "system_metrics_logged" in o:
            gpu_keys = [k for k in o.get("system_metrics_logged", []) if "gpu" in k]
            lines.append(
                f"  sweep trials' NVML energy (Wh): {o.get('energy_wh_per_trial', 'none logged')}; "
                f"MLflow system metrics: {len(o.get('system_metrics_logged', []))} keys, GPU ones: {gpu_keys or 'none'}"
            )
        if "projected_study_overhead" in o:
            lines.append(
                f"projected Ray + MLflow overhead ratio for one study trial (16 rounds, 18.0M images at "
                f"this sweep's {o['train_images_per_s']:,.0f} images/s per trial = {o['study_trial_train_s']:.0f} s of "
                f"training, {o['study_trial_overhead_s']:.1f} s of Tune + MLflow): {100 * o['projected_study_overhead']:.2f}% "
                f"(target <= {100 * TARGET_OVERHEAD:g}%: {_met(o['projected_study_overhead'], TARGET_OVERHEAD, higher=False)})"
            )
    else:
        lines.append(
            f"Ray + MLflow overhead ratio: not measured ({o.get('skipped') or o.get('error', 'no sweep')})"
        )
    sh = result.get("sharing", {})
    if "wall_ratio" in sh:
        lines.append(
            f"shared work (one dense round 0 per seed, controls from their ticket's masks): sweep wall "
            f"{sh['wall_shared_s']:.1f} s shared vs {sh['wall_unshared_s']:.1f} s with --no-share "
            f"= {sh['wall_ratio']:.2f}x ({sh.get('plan') or 'plan not printed'})"
        )
    elif sh:
        lines.append(f"shared work: not measured ({sh.get('skipped') or sh.get('error')})")
    return lines
