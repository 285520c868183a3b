"""A vectorised step: M models of one configuration trained in one process with `torch.func.vmap`.

Does training several seeds in one process (stacked parameters, per-model masks and data order) beat
packing M processes on a GPU? The benchmark measures both and decides. This is the
measured prototype, not (yet) an engine of `lottery`: it runs M copies of the fast path's masked step
as one program, capturable as one CUDA graph like `StepProgram`. Adam is elementwise, so one Adam over
the stacked [M, ...] tensors is M independent Adams; each model's loss is its own batch mean.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lth_ray.lottery.fastpath import StepProgram, make_fast_optimizer
from lth_ray.lottery.pruning import Masks
from lth_ray.lottery.train import autocast, masked_update
from lth_ray.specs import TrainSpec


class VmapProgram(StepProgram):
    """`StepProgram` for M models at once: `start_epoch(perms)` takes one permutation per model [M, n];
    `sums` is [M, 2] (summed loss, correct) per model; `params` holds the stacked weights."""

    def __init__(
        self,
        models: list[nn.Module],
        masks: list[Masks],
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        spec: TrainSpec,
        batch_size: int | None = None,
        capturable: bool = False,
    ) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        if len(models) != len(masks) or not models:
            raise ValueError(
                f"need one mask set per model, got {len(models)} models and {len(masks)} mask sets"
            )
        self.device = next(models[0].parameters()).device
        self.spec, self.x, self.y = spec, train_x, train_y
        self.batch_size = batch_size or spec.batch_size
        self.channels_last = False
        self.m = len(models)
        self.params, self.buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")

        def one(p, b, xb):
            return functional_call(base, (p, b), (xb,))

        self._forward = vmap(one)
        self.masked = [
            (
                self.params[name],
                torch.stack([mk[name] for mk in masks]).to(
                    device=self.device, dtype=self.params[name].dtype
                ),
            )
            for name in masks[0]
            if not all(bool(mk[name].all()) for mk in masks)
        ]
        self.optimizer = make_fast_optimizer(
            list(self.params.values()), spec, capturable=capturable and self.device.type == "cuda"
        )
        n = len(train_x)
        self.perm = torch.arange(n, device=self.device).repeat(self.m, 1)
        self.offset = torch.zeros((), dtype=torch.int64, device=self.device)
        self.arange = torch.arange(self.batch_size, device=self.device)
        self.sums = torch.zeros(self.m, 2, device=self.device)
        self.graph = None
        self._keep = []
        self._host_perm = None
        self.model = None  # type: ignore[assignment]

    def weights(self) -> list[torch.Tensor]:
        return list(self.params.values()) + list(self.buffers.values())

    def _step(self) -> None:
        n = self.perm.shape[1]
        idx = self.perm[:, (self.offset + self.arange) % n]  # [M, B]
        self.offset += self.batch_size
        xb, yb = self.x[idx], self.y[idx]  # [M, B, C, H, W], [M, B]
        with autocast(self.spec, self.device, cache=False):
            logits = self._forward(self.params, self.buffers, xb)  # [M, B, classes]
        losses = (
            F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="none")
            .view(self.m, -1)
            .mean(1)
        )
        masked_update(losses.sum(), self.optimizer, self.masked)
        correct = (logits.detach().argmax(-1) == yb).sum(1).to(losses.dtype)
        self.sums += torch.stack([losses.detach() * self.batch_size, correct], 1)

    def start_epoch(self, perm: torch.Tensor) -> None:
        if perm.dim() == 1:
            perm = perm.expand(self.m, -1)
        super().start_epoch(perm.contiguous())
