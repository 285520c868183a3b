"""Images per second of the Conv-4 masked training step, in this process or packed N per device.

Every case trains the project's own code on random 3x32x32 inputs already on the device: the naive
reference is `train.plain_step` driven like the plain loop (eager, a slice of the permutation per
batch), every other case is a `fastpath.StepProgram` (captured in a CUDA graph where the device is
CUDA). A measurement runs whole epochs of the real epoch structure (a fresh permutation per epoch)
for a fixed time after a warm-up, synchronising only every `sync_every` steps to read the clock.
Packed cases run N such trials as concurrent processes (no Ray) that start together; the aggregate
is all their images over the span from the first start to the last end.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import queue
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.fastpath import FastPathOptions, build_program, graph_available
from lth_ray.lottery.models import build_model
from lth_ray.lottery.pruning import apply_masks, dense_masks
from lth_ray.lottery.train import make_optimizer, plain_step, set_precision
from lth_ray.specs import ModelSpec, TrainSpec

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


@dataclass(frozen=True)
class StepCase:
    """One way of running the training step. kind: 'plain' (train.plain_step), 'program' (fast path),
    'vmap' (M models in one vmapped program) or 'streams' (M fast-path programs in one process, each
    replayed on its own CUDA stream so their small kernels can run side by side)."""

    name: str
    kind: str = "program"
    batch_size: int = 60
    precision: str = "fp32"
    graph: bool = True  # program only; ignored (eager) where the device is not CUDA
    channels_last: bool = False
    width: float = 1.0  # Conv-4 width multiplier (1.0 = the published net)
    n_train: int = 45_000  # examples resident on the device (the study's training split)
    sparsity: float = 0.0  # fraction of prunable weights masked off (cost unchanged)
    models: int = 1  # kinds 'vmap' and 'streams': trials trained together in one process

    @property
    def images_per_step(self) -> int:  # one step of each model
        return self.batch_size * self.models

    def label(self, device: torch.device) -> str:
        if self.kind == "plain":
            how = "eager"
        elif self.kind == "vmap":
            how = f"vmap x{self.models}, " + (
                "CUDA graph" if self.graph and device.type == "cuda" else "eager"
            )
        elif self.kind == "streams":
            how = f"{self.models} streams, " + (
                "CUDA graphs" if self.graph and device.type == "cuda" else "eager"
            )
        else:
            how = "CUDA graph" if self.graph and device.type == "cuda" else "eager program"
        extras = ", channels_last" if self.channels_last else ""
        return f"{how}, {self.precision}{extras}, batch {self.batch_size}"


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_device(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "type": device.type,
        "torch": torch.__version__,
        "cpu_cores": cpu_cores(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            cuda=torch.version.cuda,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        info["name"] = f"CPU ({cpu_cores()} cores, {torch.get_num_threads()} torch threads)"
    return info


def random_splits(n_train: int, device: torch.device, seed: int = 0) -> DataSplits:
    """Random images in [0, 1) and labels, made on the device (the content does not matter here)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand((n_train, *INPUT_SHAPE), generator=g, device=device)
    y = torch.randint(0, NUM_CLASSES, (n_train,), generator=g, device=device)
    small_x, small_y = x[:1], y[:1]
    return DataSplits(
        x, y, small_x, small_y, small_x, small_y, [str(i) for i in range(NUM_CLASSES)]
    )


def _model_and_masks(case: StepCase, device: torch.device, seed: int = 0):
    model = build_model(
        ModelSpec(arch="conv4", padding="same", init="glorot_normal", width=case.width),
        INPUT_SHAPE,
        NUM_CLASSES,
        seed,
    )
    model = model.to(device)
    masks = dense_masks(model)
    if case.sparsity > 0:
        g = torch.Generator(device=device).manual_seed(1 + seed)
        for k in list(masks)[:-1]:  # the output layer stays dense, as in the study
            masks[k] = torch.rand(masks[k].shape, generator=g, device=device) >= case.sparsity
        apply_masks(model, masks)
    return model, masks


class _Runner:
    """A case ready to step: `start_epoch()` then `step()` per batch, `steps_per_epoch` per epoch."""

    def __init__(self, case: StepCase, device: torch.device, warmup: int = 3) -> None:
        if case.n_train < case.batch_size:
            raise ValueError(f"{case.name}: n_train {case.n_train} < batch size {case.batch_size}")
        self.case, self.device = case, device
        spec = TrainSpec(batch_size=case.batch_size, precision=case.precision)  # type: ignore[arg-type]
        set_precision(spec, device)
        self.model, masks = _model_and_masks(case, device)
        self.data = random_splits(case.n_train, device)
        self.generator = torch.Generator().manual_seed(0)
        self.steps_per_epoch = case.n_train // case.batch_size
        n = case.n_train
        if case.kind == "vmap":
            from lth_ray.bench.vmapped import VmapProgram

            models, mask_sets = zip(
                *(_model_and_masks(case, device, seed) for seed in range(case.models))
            )
            graph = case.graph and graph_available(device)
            self.program = VmapProgram(
                list(models),
                list(mask_sets),
                self.data.train_x,
                self.data.train_y,
                spec,
                capturable=graph,
            )
            if graph:
                try:
                    self.program.capture(warmup)
                except (
                    Exception
                ) as e:  # measured eagerly then, and the row says so (graphed: false)
                    warnings.warn(
                        f"vmap capture failed ({type(e).__name__}: {e}); eager", stacklevel=2
                    )
        elif case.kind == "streams":
            options = FastPathOptions(
                graph=case.graph and graph_available(device),
                channels_last=case.channels_last,
                warmup=warmup,
            )
            self.programs = []
            for seed in range(case.models):
                model, masks = _model_and_masks(case, device, seed)
                if case.channels_last:
                    model.to(memory_format=torch.channels_last)
                self.programs.append(build_program(model, masks, self.data, spec, options))
            self.program = self.programs[0]
            cuda = device.type == "cuda"
            self.streams = [torch.cuda.Stream(device) if cuda else None for _ in self.programs]
        elif case.kind == "plain":
            opt = make_optimizer(self.model.parameters(), spec)
            self._plain = plain_step(self.model, masks, opt, spec, device)
            self._sums = torch.zeros(2, device=device)
            self._perm = torch.arange(n, device=device)
            self._b = 0
        else:
            if case.channels_last:
                self.model.to(memory_format=torch.channels_last)
            options = FastPathOptions(
                graph=case.graph and graph_available(device),
                channels_last=case.channels_last,
                warmup=warmup,
            )
            self.program = build_program(self.model, masks, self.data, spec, options)
        self.graphed = case.kind != "plain" and all(
            p.graph is not None for p in getattr(self, "programs", [self.program])
        )

    def start_epoch(self) -> None:
        perm = torch.randperm(self.case.n_train, generator=self.generator)
        if self.case.kind == "vmap":
            rest = [
                torch.randperm(self.case.n_train, generator=self.generator)
                for _ in range(self.case.models - 1)
            ]
            perm = torch.stack([perm, *rest])
        if self.case.kind == "plain":
            self._perm = perm.to(self.device)
            self._sums.zero_()
            self._b = 0
        elif self.case.kind == "streams":
            # The permutation copies run on the main stream: after every stream's last step of the
            # previous epoch, before any step of this one. No join between steps inside an epoch.
            main = torch.cuda.current_stream(self.device) if self.streams[0] else None
            for stream in self.streams if main else []:
                main.wait_stream(stream)
            self.program.start_epoch(perm)
            for p in self.programs[1:]:
                p.start_epoch(torch.randperm(self.case.n_train, generator=self.generator))
            for stream in self.streams if main else []:
                stream.wait_stream(main)
        else:
            self.program.start_epoch(perm)

    def step(self) -> None:
        if self.case.kind == "plain":
            bs = self.case.batch_size
            idx = self._perm[self._b * bs : (self._b + 1) * bs]
            self._sums += self._plain(self.data.train_x[idx], self.data.train_y[idx])
            self._b += 1
        elif self.case.kind == "streams":
            if self.streams[0] is None:
                for p in self.programs:
                    p.run()
                return
            for p, stream in zip(self.programs, self.streams):
                with torch.cuda.stream(stream):
                    p.run()
        else:
            self.program.run()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(
        self, seconds: float, min_steps: int = 2, sync_every: int | None = None
    ) -> dict[str, Any]:
        """Whole epochs (cut at the deadline) for `seconds`; returns images, seconds and the span."""
        sync_every = sync_every or (100 if self.device.type == "cuda" else 1)
        steps = 0
        self.sync()
        t0 = time.perf_counter()
        start = time.monotonic()
        elapsed = 0.0
        done = False
        while not done:
            self.start_epoch()
            for _ in range(self.steps_per_epoch):
                self.step()
                steps += 1
                if steps % sync_every == 0:
                    self.sync()
                    elapsed = time.perf_counter() - t0
                    if elapsed >= seconds and steps >= min_steps:
                        done = True
                        break
        self.sync()
        elapsed = time.perf_counter() - t0
        images = steps * self.case.images_per_step
        return {
            "images": images,
            "steps": steps,
            "seconds": elapsed,
            "images_per_s": images / elapsed if elapsed > 0 else 0.0,
            "start": start,
            "end": time.monotonic(),
        }

    def warm(self, steps: int) -> None:
        self.start_epoch()
        for _ in range(min(steps, self.steps_per_epoch)):
            self.step()
        self.sync()


def _memory(device: torch.device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    return {
        "peak_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
        "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20,
    }


def measure(
    case: StepCase, device: torch.device, seconds: float, warm_steps: int = 5
) -> dict[str, Any]:
    """One case in this process: images/s, and on CUDA the peak memory the case needed."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_setup = time.perf_counter()
    runner = _Runner(case, device)
    runner.warm(warm_steps)
    setup_s = time.perf_counter() - t_setup
    result = runner.timed(seconds)
    result.update(_memory(device))
    result.update(
        case=dataclasses.asdict(case),
        label=case.label(device),
        graphed=runner.graphed,
        setup_s=setup_s,
    )
    del runner
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------------
# Packed: N trials per device as concurrent processes.


def _packed_worker(
    case: dict[str, Any], device_name: str, seconds: float, threads: int, out: Any, go: Any
) -> None:
    try:
        torch.set_num_threads(threads)
        device = torch.device(device_name)
        runner = _Runner(StepCase(**case), device)
        runner.warm(5)
        out.put(("ready", os.getpid(), _memory(device)))
        if not go.wait(600):
            return
        result = runner.timed(seconds)
        result.update(_memory(device), graphed=runner.graphed, pid=os.getpid())
        out.put(("done", os.getpid(), result))
    except BaseException as e:  # report, never hang the parent
        out.put(("error", os.getpid(), f"{type(e).__name__}: {e}"))


def measure_packed(
    case: StepCase,
    n: int,
    device: torch.device,
    seconds: float,
    timeout: float = 300.0,
    threads: int = 1,
) -> dict[str, Any]:
    """N processes, each one trial's step (`threads` CPU threads, as a trial with resources.cpu: 1);
    they start together and run for `seconds` each."""
    ctx = mp.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    free_before = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    procs = [
        ctx.Process(
            target=_packed_worker,
            args=(dataclasses.asdict(case), str(device), seconds, threads, out, go),
            daemon=True,
        )
        for _ in range(n)
    ]
    t_spawn = time.perf_counter()
    for p in procs:
        p.start()
    results: list[dict[str, Any]] = []
    ready: list[dict[str, float]] = []
    errors: list[str] = []
    device_used_mib = None
    try:
        deadline = time.monotonic() + timeout
        while len(ready) + len(errors) < n:
            kind, _pid, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            (ready.append(payload) if kind == "ready" else errors.append(str(payload)))
        if device.type == "cuda" and free_before is not None:
            device_used_mib = (free_before - torch.cuda.mem_get_info(device)[0]) / 2**20
        setup_s = time.perf_counter() - t_spawn
        go.set()
        while len(results) + len(errors) < n:
            kind, _pid, payload = out.get(timeout=max(0.1, deadline - time.monotonic() + seconds))
            (results.append(payload) if kind == "done" else errors.append(str(payload)))
    except queue.Empty:
        errors.append(f"timed out after {timeout:.0f} s waiting for the workers")
        setup_s = time.perf_counter() - t_spawn
    finally:
        go.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if errors or len(results) < n:
        return {
            "processes": n,
            "error": "; ".join(errors) or "workers did not report",
            "case": dataclasses.asdict(case),
        }
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    images = sum(r["images"] for r in results)
    per_proc = [r["images_per_s"] for r in results]
    summary: dict[str, Any] = {
        "processes": n,
        "images": images,
        "seconds": span,
        "images_per_s": images / span if span > 0 else 0.0,
        "per_process_images_per_s": per_proc,
        "slowest_process_images_per_s": min(per_proc),
        "threads_per_process": threads,
        "graphed": all(r.get("graphed") for r in results),
        "setup_s": setup_s,
        "case": dataclasses.asdict(case),
        "label": case.label(device),
    }
    if device.type == "cuda":
        summary["peak_reserved_mib_per_trial"] = max(
            r.get("peak_reserved_mib", math.nan) for r in results
        )
        summary["peak_allocated_mib_per_trial"] = max(
            r.get("peak_allocated_mib", math.nan) for r in results
        )
        if (
            device_used_mib is not None
        ):  # what the processes hold on the card, CUDA context included
            summary["device_mib_per_trial"] = device_used_mib / n
    return summary
