"""The CUDA fast path of `train`: the whole masked step captured once per round in a CUDA graph.

Why: at batch 60 a Conv-4 step on a large GPU is bound by kernel launches and host work, not by
arithmetic. Here the dataset already lives on the device, each batch is gathered *inside* the step
from a device copy of the epoch's permutation (so a step needs no host input at all), shapes are
static, and forward, loss, backward, grad mask, optimizer step (Adam with capturable state) and
weight mask are recorded once into a CUDA graph and replayed; the host synchronises once per epoch,
to read the training loss and evaluate.

It computes what the plain loop of `lth_ray.lottery.train` computes: the same permutation from the same
generator, the same masked step (pruned weights exactly 0, Adam's moments never see them), the same
records. With `graph=False` the very same step runs eagerly, which is how the CPU tests check the
epoch driver against the plain loop, and where a capture fails the round falls back to it.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lth_ray.lottery import augment as aug
from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.pruning import Masks
from lth_ray.lottery.schedule import batches_per_epoch
from lth_ray.lottery.train import (
    Augmenter,
    StateDict,
    TrainResult,
    autocast,
    black_of,
    make_optimizer,
    masked_params,
    masked_update,
    plain_step,
    resolve_precision,
    run_epochs,
    set_precision,
)
from lth_ray.specs import TrainSpec

log = logging.getLogger(__name__)


@dataclass
class FastPathOptions:
    """Knobs of the fast path that are not part of a trial's science (they change speed, not results)."""

    graph: bool | None = None  # capture the step in a CUDA graph; None = when the device is CUDA
    # NHWC activations and conv weights inside the round; None = when the step runs bf16 on CUDA
    # (measured: +10% for one trial, +33% for 8 packed under MPS; fp32 and tf32 keep NCHW)
    channels_last: bool | None = None
    eval_batch_size: int = 2500  # evaluation batch: at least this, at least spec.eval_batch_size
    warmup: int = 3  # eager steps before capture (lazy optimizer state, cuDNN/cuBLAS plans)
    capturable: bool | None = None  # Adam state on the device; None = when graphed (checks set it)


def graph_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def use_channels_last(options: FastPathOptions, spec: TrainSpec, device: torch.device) -> bool:
    if options.channels_last is not None:
        return options.channels_last
    return device.type == "cuda" and resolve_precision(spec.precision, device) == "bf16"


def make_fast_optimizer(
    params, spec: TrainSpec, capturable: bool, lrs: torch.Tensor | None = None
) -> torch.optim.Optimizer:
    """`train.make_optimizer`, with Adam's step counter on the device when the step is captured."""
    if spec.optimizer == "adam" and spec.eps_style == "torch" and capturable:
        return torch.optim.Adam(
            params,
            lr=spec.lr,
            betas=tuple(spec.betas),
            eps=spec.eps,
            weight_decay=spec.weight_decay,
            capturable=True,
        )
    # ScheduledSGD and KerasAdam keep their step counts (and SGD its learning-rate table) on the
    # device: capturable as they are
    return make_optimizer(params, spec, lrs)


class StepProgram:
    """One masked training step that takes its batch from device buffers, replayable as a graph.

    Per epoch: `start_epoch(perm, draws, first)` loads the permutation and the augmentation draws
    (one copy each), sets the batch offset to batch `first` and zeroes the loss/accuracy sums; every
    `run()` trains on the next `batch_size` examples of it, augmented inside the step when
    `augmented`. `sums` holds [summed loss, correct predictions] of the epoch so far, read once at
    the epoch's end.
    """

    def __init__(
        self,
        model: nn.Module,
        masks: Masks,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        spec: TrainSpec,
        optimizer: torch.optim.Optimizer,
        batch_size: int | None = None,
        channels_last: bool = False,
        augmented: bool = False,
        black: torch.Tensor | None = None,
    ) -> None:
        self.device = next(model.parameters()).device
        self.model, self.spec, self.optimizer = model, spec, optimizer
        self.x, self.y = train_x, train_y
        self.batch_size = batch_size or spec.batch_size
        self.channels_last = channels_last
        self.masked = masked_params(model, masks, self.device)
        n = len(train_x)
        self.perm = torch.arange(n, device=self.device)
        self.offset = torch.zeros((), dtype=torch.int64, device=self.device)
        self.arange = torch.arange(self.batch_size, device=self.device)
        self.sums = torch.zeros(2, device=self.device)
        self.augmented = augmented
        self.black = (
            torch.zeros(train_x.shape[1], device=self.device)
            if black is None
            else black.to(self.device)
        )
        centre = torch.full((n,), aug.PAD, dtype=torch.int64, device=self.device)
        self.draws = aug.Draws(
            centre, centre.clone(), torch.zeros(n, dtype=torch.bool, device=self.device)
        )
        self.graph: torch.cuda.CUDAGraph | None = None
        self._keep: list[torch.Tensor] = []  # tensors the graph reads or writes: keep them alive
        self._host_perm: torch.Tensor | None = None

    # -- the step ---------------------------------------------------------------------------------
    def _step(self) -> None:
        idx = self.perm[(self.offset + self.arange) % len(self.perm)]  # never out of range
        self.offset += self.batch_size
        xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        if self.augmented:
            d = self.draws
            xb = aug.apply(
                xb,
                d.dy.index_select(0, idx),
                d.dx.index_select(0, idx),
                d.flip.index_select(0, idx),
                self.black,
            )
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(self.spec, self.device, cache=False):
            logits = self.model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        masked_update(loss, self.optimizer, self.masked)
        correct = (logits.detach().argmax(1) == yb).sum().to(loss.dtype)
        self.sums += torch.stack([loss.detach() * self.batch_size, correct])

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def start_epoch(
        self, perm: torch.Tensor, draws: aug.Draws | None = None, first: int = 0
    ) -> None:
        if perm.device.type == "cpu" and self.device.type == "cuda":
            perm = perm.pin_memory()
            self._host_perm = perm  # the asynchronous copy reads it after this call returns
        self.perm[: len(perm)].copy_(perm, non_blocking=True)
        if draws is not None:
            for buf, new in zip(
                (self.draws.dy, self.draws.dx, self.draws.flip), (draws.dy, draws.dx, draws.flip)
            ):
                buf.copy_(new)
        self.offset.fill_(first * self.batch_size)
        self.sums.zero_()

    # -- capture ----------------------------------------------------------------------------------
    def capture(self, warmup: int = 3) -> None:
        """Warm up on a side stream, put weights and optimizer state back, record one step."""
        if not graph_available(self.device):
            raise ValueError(f"CUDA graphs need a CUDA device; this step runs on {self.device}")
        saved = [t.detach().clone() for t in self.weights()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with warnings.catch_warnings():  # "capturable=True but step() runs uncaptured": on purpose
            warnings.simplefilter("ignore")
            with torch.cuda.stream(side):
                for _ in range(max(1, warmup)):
                    self.offset.zero_()
                    self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore(saved)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: in a Ray actor the trial is not the only thread of the process
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._step()
        except Exception:
            torch.cuda.synchronize(self.device)
            self._restore(saved)
            raise
        self.graph = graph
        self._keep = [
            p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None
        ]
        self.offset.zero_()
        self.sums.zero_()

    def weights(self) -> list[torch.Tensor]:
        """The tensors a step changes besides the optimizer's state (restored after the warm-up)."""
        return list(self.model.state_dict().values())

    @torch.no_grad()
    def _restore(self, saved: list[torch.Tensor]) -> None:
        """Weights as before the warm-up; optimizer state as fresh (zero moments, step 0)."""
        for v, s in zip(self.weights(), saved):
            v.copy_(s)
        for state in self.optimizer.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor):
                    v.zero_()
        self.optimizer.zero_grad(set_to_none=True)
        self.offset.zero_()
        self.sums.zero_()


def _contiguous_state(model: nn.Module) -> StateDict:
    """A copy in the default layout, whatever the model's memory format inside the round."""
    return {
        k: v.detach().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }


def build_program(
    model: nn.Module,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    options: FastPathOptions,
    batch_size: int | None = None,
    lrs: torch.Tensor | None = None,
    augmented: bool = False,
) -> StepProgram:
    """The optimizer and the (captured when possible) step of one round."""
    device = next(model.parameters()).device
    graph = graph_available(device) if options.graph is None else options.graph
    if graph and not graph_available(device):
        raise ValueError(
            f"FastPathOptions(graph=True) needs a CUDA device; the model is on {device}"
        )
    capturable = graph if options.capturable is None else options.capturable
    optimizer = make_fast_optimizer(
        model.parameters(),
        spec,
        capturable=capturable and device.type == "cuda",
        lrs=None if lrs is None else lrs.to(device=device, dtype=torch.float32),
    )
    if capturable and not graph:  # a check runs the captured math eagerly on purpose: no warning
        optimizer._warned_capturable_if_run_uncaptured = True  # type: ignore[attr-defined]
    program = StepProgram(
        model,
        masks,
        data.train_x,
        data.train_y,
        spec,
        optimizer,
        batch_size,
        use_channels_last(options, spec, device),
        augmented,
        black_of(data),
    )
    if graph:
        try:
            program.capture(options.warmup)
        except Exception as e:  # an op that cannot be captured: run this round eagerly, loudly
            warnings.warn(
                f"CUDA graph capture failed ({type(e).__name__}: {e}); running the step eagerly",
                stacklevel=2,
            )
            log.warning("CUDA graph capture failed, eager step: %s", e)
    return program


def train_fast(
    model: nn.Module,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    steps: tuple[int, str],
    generator: torch.Generator,
    rewind_at: tuple[int, str] | list[tuple[int, str]] | None = None,
    options: FastPathOptions | None = None,
    start: int = 0,
    lrs: torch.Tensor | None = None,
    augment: Augmenter | None = None,
) -> TrainResult:
    """`train.train` with the step as a `StepProgram`: same data order, same records, one sync per epoch.

    Full batches replay the program; a last partial batch (when `drop_last` is off and the batch size
    does not divide the training set) runs as the plain eager step on the same optimizer.
    """
    options = options or FastPathOptions()
    device = next(model.parameters()).device
    options = dataclasses.replace(options, channels_last=use_channels_last(options, spec, device))
    set_precision(spec, device)
    model.train()
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    eval_spec = dataclasses.replace(
        spec, eval_batch_size=max(spec.eval_batch_size, options.eval_batch_size)
    )
    epoch = None
    try:
        epoch = FastEpoch(model, masks, data, spec, options, lrs, augment is not None)
        return run_epochs(
            model, epoch, data, eval_spec, steps, generator, rewind_at, start, augment
        )
    finally:
        if epoch is not None:
            epoch.close()
        if options.channels_last:
            model.to(memory_format=torch.contiguous_format)


class FastEpoch:
    """An epoch of the fast path for `train.run_epochs`: full batches replay the program; a last
    partial batch (when `drop_last` is off and the batch size does not divide the training set) runs
    as the plain eager step on the same optimizer."""

    def __init__(
        self,
        model: nn.Module,
        masks: Masks,
        data: DataSplits,
        spec: TrainSpec,
        options: FastPathOptions,
        lrs: torch.Tensor | None = None,
        augmented: bool = False,
    ) -> None:
        n = len(data.train_x)
        self.model, self.data = model, data
        self.full = n // spec.batch_size
        if self.full == 0:  # fewer examples than one batch: nothing static to capture
            options = dataclasses.replace(options, graph=False)
        self.program = build_program(
            model, masks, data, spec, options, min(spec.batch_size, n), lrs, augmented
        )
        device = self.program.device
        self.tail = (
            plain_step(model, masks, self.program.optimizer, spec, device)
            if batches_per_epoch(n, spec) > self.full
            else None
        )
        self.tail_sums = torch.zeros(2, device=device)

    def start_epoch(
        self, perm: torch.Tensor, draws: aug.Draws | None = None, first: int = 0
    ) -> None:
        self.program.start_epoch(perm, draws, first)
        self.tail_sums.zero_()

    def run_batch(self, b: int) -> int:
        if b < self.full:
            self.program.run()
            return self.program.batch_size
        p = self.program
        idx = p.perm[self.full * p.batch_size :]
        xb = self.data.train_x[idx]
        if p.augmented:
            xb = aug.apply(xb, p.draws.dy[idx], p.draws.dx[idx], p.draws.flip[idx], p.black)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # capturable Adam stepping outside the graph
            self.tail_sums += self.tail(xb, self.data.train_y[idx])
        return len(idx)

    def epoch_sums(self) -> torch.Tensor:
        return self.program.sums + self.tail_sums

    def snapshot(self) -> StateDict:
        return _contiguous_state(self.model)

    def close(self) -> None:
        if (
            self.program.graph is not None
        ):  # hand the graph's private memory back before the next round
            del self.program, self.tail
            torch.cuda.empty_cache()
