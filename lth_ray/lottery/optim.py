"""Adam with epsilon in the Keras / TF1 form ("epsilon hat" of Kingma & Ba).

Adam's epsilon can enter the update in two places, and the frameworks disagree:

- torch (`torch.optim.Adam`, like JAX's optax) adds it after bias-correcting the second moment:

      w -= lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

- Keras (`keras.optimizers.Adam`) and TF1 (`tf.train.AdamOptimizer`) follow the efficient form at
  the end of Section 2 of Kingma & Ba (2015): the bias corrections are folded into the step size and
  epsilon is added to the square root of the raw second moment,

      w -= lr_t * m / (sqrt(v) + eps),  lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)

Dividing through by sqrt(1 - b2^t) shows the Keras form is the torch form with a step-dependent
epsilon, eps_t = eps / sqrt(1 - b2^t): about 31.6 * eps at t = 1 with b2 = 0.999, within 1% of eps
only after a few thousand steps. With tiny gradients (|g| comparable to eps_t) the early steps are
therefore shorter in the Keras form. Lottery-ticket experiments restart the optimizer every pruning
round, so the early steps of every round see the difference; reproducing results from Keras or TF1
code (Frankle & Carbin used TF1) needs this form.

`KerasAdam` is written for CUDA-graph capture: the step count is a float32 tensor on the
parameter's device (as in torch's `capturable=True` Adam), every operation is a tensor op with no
host synchronisation, and state created lazily on the first step and then zeroed in place
(`.zero_()` on every state tensor) behaves exactly as a fresh optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def _closure_loss(closure: Callable[[], float] | None) -> float | None:
    """What `Optimizer.step(closure)` returns: the closure's loss, evaluated with gradients on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class KerasAdam(torch.optim.Optimizer):
    """Adam with epsilon added to sqrt(v) of the raw second moment (Keras / TF1), capturable.

    `weight_decay` is L2 regularisation added to the gradient (grad += weight_decay * w), as in
    `torch.optim.Adam`, not decoupled (AdamW). Per-parameter state: `step` (float32 scalar tensor),
    `exp_avg` (m) and `exp_avg_sq` (v), created on the first step.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"invalid epsilon: {eps}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid betas: {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = _closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("KerasAdam does not support sparse gradients")
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step.add_(1)
                if weight_decay != 0.0:
                    grad = grad.add(p, alpha=weight_decay)
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                # lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), a device scalar: no host sync
                lr_t = (1.0 - torch.pow(beta2, step)).sqrt_().div_(1.0 - torch.pow(beta1, step))
                lr_t.mul_(lr)
                p.sub_(exp_avg.div(_sqrt_plus(exp_avg_sq, eps)).mul_(lr_t))
        return loss


# sqrt of the smallest normal float32: below half an ulp of any eps >= 1e-10 (about eps * 6e-8)
_TINY = torch.finfo(torch.float32).tiny
_CLAMP_EPS = 1e-10


def _sqrt_plus(v: torch.Tensor, eps: float) -> torch.Tensor:
    """sqrt(v) + eps, bit for bit, but fast on the CPU when v holds zeros or subnormals.

    A pruned weight's second moment stays exactly 0, and torch's CPU sqrt takes a slow path on 0
    (and on subnormals): about 7x slower per element, which made a masked round ~1.5x a dense one.
    Raising v to the smallest normal float first changes sqrt(v) by under 1.1e-19, which adding
    eps >= 1e-10 rounds away (half an ulp of eps is larger), so the sum is the same float.
    """
    if v.device.type == "cpu" and eps >= _CLAMP_EPS and v.dtype == torch.float32:
        return v.clamp_min(_TINY).sqrt_().add_(eps)
    return v.sqrt().add_(eps)


class ScheduledSGD(torch.optim.Optimizer):
    """SGD with (Nesterov) momentum and coupled weight decay as `torch.optim.SGD` computes it, with
    the learning rate of every step read from a device table: capturable in a CUDA graph.

    Per step, per parameter: d = g + weight_decay * w; b = momentum * b + d (b starts at 0, so the
    first step gives b = d, torch's first-step rule with dampening 0); d = d + momentum * b under
    Nesterov, else d = b; w -= lr[t] * d, t the parameter's step count (the table's last entry once
    t runs past it). A learning-rate schedule is therefore the table `lrs`, built on the host from
    the pure function of the step (`lottery.schedule.learning_rates`); the step count is a device
    tensor, so the optimizer needs no host input and zeroing its state makes it fresh.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lrs: torch.Tensor,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lrs.ndim != 1 or len(lrs) < 1 or bool((lrs < 0).any()):
            raise ValueError("lrs must be a non-empty 1-D tensor of non-negative learning rates")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        if nesterov and momentum <= 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        defaults = {
            "lr": float(lrs[0]),
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)
        self.lrs = lrs.detach().to(torch.float32)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = _closure_loss(closure)
        last = len(self.lrs) - 1
        for group in self.param_groups:
            momentum, weight_decay = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
                    if momentum:
                        state["momentum_buffer"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                if self.lrs.device != p.device:
                    self.lrs = self.lrs.to(p.device)
                lr = self.lrs[state["step"].clamp(max=last)].to(p.dtype)
                state["step"].add_(1)
                d = p.grad
                if weight_decay != 0.0:
                    d = d.add(p, alpha=weight_decay)
                if momentum:
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(d)
                    d = d.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.sub_(d * lr)
        return loss
