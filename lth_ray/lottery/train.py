"""Masked training and evaluation of one network: the inner loop of every pruning round.

Pruned weights stay exactly zero: their gradients are masked before the optimizer step (so Adam's
moments never see them) and the weights are multiplied by the mask after it. Each epoch ends with a
validation pass; the weights at minimum validation loss ("best", the early-stop point), at the last
epoch ("final") and, when asked, at a rewind point are kept. No Ray, no MLflow.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lth_ray.lottery import augment as aug
from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.optim import KerasAdam, ScheduledSGD
from lth_ray.lottery.pruning import Masks
from lth_ray.lottery.schedule import batches_per_epoch, parse_steps, steps_to_iterations
from lth_ray.specs import TrainSpec

StateDict = dict[str, torch.Tensor]


@dataclass
class EpochStats:
    """One validation point (once per epoch by default; every `train.eval_every` steps)."""

    epoch: int  # 1-based epoch of the round's training the evaluation falls in
    iteration: int  # optimizer steps done when it ran
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float


@dataclass
class TrainResult:
    best: StateDict  # weights at minimum validation loss (earliest epoch on ties)
    final: StateDict  # weights after the last step
    rewind: StateDict | None  # weights at the (first) requested rewind point, if any
    best_epoch: int  # 1-based epoch of minimum validation loss
    best_iteration: int
    best_val_loss: float
    best_val_acc: float
    curve: list[EpochStats] = field(default_factory=list)
    rewinds: dict[tuple[int, str], StateDict] = field(default_factory=dict)  # every requested point
    seconds: float = 0.0  # wall time of the training steps (validation excluded)
    images: int = 0  # training images processed

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when visible, else cpu; 'cuda' without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "train.device is 'cuda' but no CUDA device is visible (use 'auto' or 'cpu')"
        )
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere.

    Why bf16 on CUDA: over 5 seeds of dense Conv-4 (seed protocol, offline CIFAR-10 copy) its test
    accuracy was within fp32's seed-to-seed spread (python -m lth_ray.sweep ablations/precision_study.yaml), at
    over twice fp32's graphed speed. On CPU, bf16 autocast is slower than fp32, so fp32 stays.
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def set_precision(spec: TrainSpec, device: torch.device) -> None:
    """TF32 is a global switch of the CUDA matmul/conv kernels; set it explicitly either way."""
    if device.type == "cuda":
        tf32 = resolve_precision(spec.precision, device) == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def set_determinism(spec: TrainSpec) -> None:
    """Deterministic kernels on CUDA when asked (process-wide switches, so set either way: a reused
    worker process must not inherit the previous trial's setting).

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates its handle: call this before the trial's
    first matmul on the device. Ops without a deterministic CUDA kernel warn instead of failing.
    """
    if spec.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(spec.deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = spec.deterministic
    torch.backends.cudnn.benchmark = False


def autocast(
    spec: TrainSpec, device: torch.device, cache: bool = True
) -> contextlib.AbstractContextManager:
    """bf16 autocast where the precision resolves to bf16. Under CUDA-graph capture the autocast
    weight cache must be off (`cache=False`); the results are the same either way."""
    if resolve_precision(spec.precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def make_optimizer(
    params, spec: TrainSpec, lrs: torch.Tensor | None = None
) -> torch.optim.Optimizer:
    """The round's optimizer; Adam puts epsilon where `spec.eps_style` says (lth_ray/lottery/optim.py).

    SGD reads every step's learning rate from `lrs` (the round's schedule, `schedule.learning_rates`;
    constant `spec.lr` when None). Adam trains at the constant `spec.lr` (validation refuses a
    schedule with Adam)."""
    if spec.optimizer == "adam":
        adam = KerasAdam if spec.eps_style == "keras" else torch.optim.Adam
        return adam(
            params,
            lr=spec.lr,
            betas=tuple(spec.betas),
            eps=spec.eps,
            weight_decay=spec.weight_decay,
        )
    return ScheduledSGD(
        params,
        lrs=torch.tensor([spec.lr], dtype=torch.float32) if lrs is None else lrs,
        momentum=spec.momentum,
        weight_decay=spec.weight_decay,
        nesterov=spec.nesterov,
    )


def clone_state(model: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: TrainSpec, device: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y), in large batches; one host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), spec.eval_batch_size):
        xb, yb = x[i : i + spec.eval_batch_size], y[i : i + spec.eval_batch_size]
        with autocast(spec, device):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return loss_sum.item() / n, correct.item() / n


StepFactory = Callable[..., Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
Augmenter = Callable[[int], aug.Draws]  # 1-based epoch of the round's stream -> that epoch's draws


def black_of(data: DataSplits) -> torch.Tensor:
    """The value of a zero pixel after scaling, per channel (zeros where the data does not say)."""
    if data.black is not None:
        return data.black.to(data.train_x.device)
    return torch.zeros(data.train_x.shape[1], device=data.train_x.device)


MaskedParams = list[tuple[torch.Tensor, torch.Tensor]]


def masked_params(model: nn.Module, masks: Masks, device: torch.device) -> MaskedParams:
    """(parameter, float mask) for every layer that has pruned weights."""
    params = dict(model.named_parameters())
    return [
        (params[name], m.to(device=device, dtype=params[name].dtype))
        for name, m in masks.items()
        if not bool(m.all())
    ]


def masked_update(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, masked: MaskedParams
) -> None:
    """Backward and optimizer step that keep pruned weights exactly zero.

    The gradients are masked before the step, so Adam's moments never see pruned weights, and the
    weights are multiplied by the mask after it (weight decay would otherwise move them).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p, m in masked:
        if p.grad is not None:
            p.grad.mul_(m)
    optimizer.step()
    with torch.no_grad():
        for p, m in masked:
            p.mul_(m)


def plain_step(
    model: nn.Module,
    masks: Masks,
    optimizer: torch.optim.Optimizer,
    spec: TrainSpec,
    device: torch.device,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The reference step: forward, loss, backward, masked grads, optimizer step, mask multiply.

    Returns the summed loss and the number of correct predictions as a 2-vector (no host sync).
    """
    masked = masked_params(model, masks, device)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with autocast(spec, device):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        masked_update(loss, optimizer, masked)
        return torch.stack(
            [loss.detach() * len(yb), (logits.detach().argmax(1) == yb).sum().to(loss.dtype)]
        )

    return step


class PlainEpoch:
    """The plain loop's epoch: batches cut from the epoch's permutation, each one `plain_step`."""

    def __init__(
        self,
        model: nn.Module,
        masks: Masks,
        data: DataSplits,
        spec: TrainSpec,
        step_factory: StepFactory | None = None,
        lrs: torch.Tensor | None = None,
    ) -> None:
        self.model, self.data, self.batch_size = model, data, spec.batch_size
        self.device = next(model.parameters()).device
        optimizer = make_optimizer(model.parameters(), spec, lrs)
        self.step = (step_factory or plain_step)(model, masks, optimizer, spec, self.device)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.sums = torch.zeros(2, device=self.device)
        self.draws: aug.Draws | None = None
        self.black = black_of(data)

    def start_epoch(
        self, perm: torch.Tensor, draws: aug.Draws | None = None, first: int = 0
    ) -> None:
        self.perm = perm.to(self.device)
        self.sums = torch.zeros(2, device=self.device)
        self.draws = None if draws is None else draws.to(self.device)

    def run_batch(self, b: int) -> int:
        idx = self.perm[b * self.batch_size : (b + 1) * self.batch_size]
        xb = self.data.train_x[idx]
        if self.draws is not None:
            d = self.draws
            xb = aug.apply(xb, d.dy[idx], d.dx[idx], d.flip[idx], self.black)
        self.sums += self.step(xb, self.data.train_y[idx])
        return len(idx)

    def epoch_sums(self) -> torch.Tensor:
        return self.sums

    def snapshot(self) -> StateDict:
        return clone_state(self.model)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epochs(
    model: nn.Module,
    program,
    data: DataSplits,
    spec: TrainSpec,
    steps: tuple[int, str],
    generator: torch.Generator,
    rewind_at: tuple[int, str] | list[tuple[int, str]] | None = None,
    start: int = 0,
    augment: Augmenter | None = None,
) -> TrainResult:
    """The epoch loop shared by the plain and the fast path: data order, budget, validation, best/final/rewind.

    `rewind_at` is one rewind point or several (a shared dense round 0 captures every point its
    branches need); snapshots do not change the training.

    `start` is the step of the round's stream the training begins at (a rewind point k): the
    permutations of the epochs before it are drawn and skipped, the first epoch begins at batch
    k mod per-epoch, and validation falls on the stream's own `eval_every` grid. `augment` gives the
    augmentation draws of each (1-based) epoch of the stream.

    `program` trains one batch at a time (`start_epoch(perm)`, `run_batch(b)`, `epoch_sums()`,
    `snapshot()`). Validation runs every `spec.eval_every` steps and at the end of training (the
    default, every epoch, is once per epoch); the loss and accuracy sums are read only then (one
    host sync per evaluation). A curve record's training loss covers the steps since the previous
    evaluation within its epoch; `seconds` counts training only, not validation.
    """
    device = next(model.parameters()).device
    n = len(data.train_x)
    per_epoch = batches_per_epoch(n, spec)
    total_iters = steps_to_iterations(steps, per_epoch)
    eval_iters = steps_to_iterations(parse_steps(spec.eval_every), per_epoch)
    points = (
        []
        if rewind_at is None
        else [rewind_at]
        if isinstance(rewind_at, tuple)
        else list(rewind_at)
    )
    at = {p: steps_to_iterations(p, per_epoch) for p in points}
    rewinds = {p: program.snapshot() for p, i in at.items() if i == 0}

    best: StateDict | None = None
    best_loss, best_acc, best_epoch, best_iter = math.inf, 0.0, 0, 0
    curve: list[EpochStats] = []
    seconds, images, it = 0.0, 0, 0
    epoch, first = divmod(start, per_epoch)
    before = epoch  # records count the round's own epochs; the stream's index them
    for _ in range(epoch):  # the stream's epochs before the start point
        torch.randperm(n, generator=generator)
    while it < total_iters:
        epoch += 1
        perm = torch.randperm(n, generator=generator)
        draws = augment(epoch) if augment is not None else None
        _sync(device)
        t0 = time.perf_counter()
        program.start_epoch(perm, draws, first)
        window, taken = 0, None  # examples trained since the last evaluation; the sums then
        for b in range(first, per_epoch):
            if it >= total_iters:
                break
            window += program.run_batch(b)
            it += 1
            due = [p for p, i in at.items() if i == it]
            if due:
                snapshot = program.snapshot()
                rewinds.update(dict.fromkeys(due, snapshot))
            if (start + it) % eval_iters and it != total_iters:
                continue
            sums = program.epoch_sums()
            part = sums if taken is None else sums - taken
            taken = sums.clone()
            _sync(device)
            seconds += time.perf_counter() - t0
            images += window
            val_loss, val_acc = evaluate(model, data.val_x, data.val_y, spec, device)
            train_loss, train_correct = (part / max(window, 1)).tolist()
            ep = epoch - before
            curve.append(EpochStats(ep, it, train_loss, train_correct, val_loss, val_acc))
            if val_loss < best_loss:
                best_loss, best_acc, best_epoch, best_iter = val_loss, val_acc, ep, it
                best = program.snapshot()
            window = 0
            t0 = time.perf_counter()
        if window:  # the epoch ended between two evaluations
            _sync(device)
            seconds += time.perf_counter() - t0
            images += window
        first = 0
    final = program.snapshot()
    return TrainResult(
        best=best if best is not None else final,
        final=final,
        rewind=rewinds.get(points[0]) if points else None,
        rewinds=rewinds,
        best_epoch=best_epoch,
        best_iteration=best_iter,
        best_val_loss=best_loss,
        best_val_acc=best_acc,
        curve=curve,
        seconds=seconds,
        images=images,
    )


def train(
    model: nn.Module,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    steps: tuple[int, str],
    generator: torch.Generator,
    rewind_at: tuple[int, str] | list[tuple[int, str]] | None = None,
    step_factory: StepFactory | None = None,
    start: int = 0,
    lrs: torch.Tensor | None = None,
    augment: Augmenter | None = None,
) -> TrainResult:
    """The plain loop: train `model` in place under `masks` for `steps` ('ep' or 'it'); data order
    from `generator`, from step `start` of the round's stream on; SGD's learning rate of each step
    from `lrs`. `lottery.fit` chooses between it and the CUDA fast path."""
    device = next(model.parameters()).device
    set_precision(spec, device)
    model.train()
    program = PlainEpoch(model, masks, data, spec, step_factory, _on(lrs, device))
    return run_epochs(model, program, data, spec, steps, generator, rewind_at, start, augment)


def _on(lrs: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if lrs is None else lrs.to(device=device, dtype=torch.float32)
