"""One lottery-ticket trial as a sequence of resumable rounds (no Ray, no MLflow).

Round 0 trains the dense net from theta_0. Every later round scores the active weights with the
criterion, prunes (iterative: from the last retrained net; one-shot: from the dense net straight to the
iterative schedule's level), rewinds the survivors (theta_0 or a late-rewind point) and retrains under
the mask. A control trial computes the same ticket and then trains, and reports, its control of each
level: `reinit` (the ticket's mask, a fresh initialisation) or `random_mask` (a uniformly random mask
with the ticket's per-layer sparsity, from the ticket's start weights; open_lth's `randomly_prune`).

What a pruned round retrains is `prune.retrain_mode` (Renda et al. 2020): `weight_rewind` restarts
the survivors from the rewind point k (theta_0 when k is 'init'), and the learning-rate schedule,
the data order and the augmentation from step k; `lr_rewind` keeps the weights the round pruned
(the last trained net, the dense one under one-shot) and runs the schedule again from step k;
`finetune` keeps them too and trains at the schedule's final learning rate. Each round makes a
fresh optimizer (no momentum carried over; open_lth's `train(start_step=k)` does the same). The
whole state dict travels: BatchNorm's scale, shift and running statistics are rewound with the
weights, kept with them, and drawn afresh by a reinit control, but never pruned.

Everything random is derived from (seed, purpose, round), and the checkpoint holds masks, the weights
the next round scores, the rewind point and the history (theta_0 is rebuilt from the seed), so a
trial restored from the checkpoint of round k continues from exactly the state an uninterrupted one
had. On the CPU the rounds that follow are bit-identical too. On CUDA they are bit-identical with
`train.deterministic: true`; without it, kernels that accumulate in a varying order (cuDNN's
convolution backward, atomics) make reruns, resumed or not, differ in the last bits, which training
can amplify into small differences of the reported accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lth_ray.lottery import augment
from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.fit import fit
from lth_ray.lottery.instability import PairResult, analyse_pair
from lth_ray.lottery.models import build_model, weight_layers
from lth_ray.lottery.pruning import (
    CRITERIA,
    Masks,
    ScoreContext,
    apply_masks,
    dense_masks,
    layer_fractions,
    prunable_names,
    prune,
    prune_to,
    random_like,
    schedule_remaining,
    sparsity_report,
)
from lth_ray.lottery.schedule import (
    branch_steps,
    learning_rates,
    parse_rewind,
    parse_steps,
    round_start,
    round_steps,
    schedule_problem,
)
from lth_ray.lottery.train import (
    StateDict,
    StepFactory,
    TrainResult,
    clone_state,
    evaluate,
    resolve_device,
    resolve_precision,
    set_determinism,
)
from lth_ray.specs import TrialConfig

CHECKPOINT_VERSION = 1


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any tuple of plain values (same on every machine and Python)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def _cpu(state: StateDict | None) -> StateDict | None:
    return None if state is None else {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class TrialState:
    """What a trial needs to continue after `rounds_done` rounds (kept on the CPU)."""

    rounds_done: int = 0
    masks: Masks = field(default_factory=dict)
    score_best: StateDict | None = None  # weights the next round's criterion scores
    score_final: StateDict | None = None
    rewind: StateDict | None = None  # late-rewind weights captured in round 0
    last_final: StateDict | None = None  # the last round's trained ticket (final weights)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per round
    curves: list[list[dict[str, float]]] = field(default_factory=list)  # per round, per epoch


class LotteryTrial:
    """Runs the rounds of one TrialConfig; `on_round` after each finished round gets the record."""

    def __init__(
        self,
        cfg: TrialConfig,
        data: DataSplits,
        device: torch.device | str | None = None,
        step_factory: StepFactory | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = (
            torch.device(device) if device is not None else resolve_device(cfg.train.device)
        )
        set_determinism(cfg.train)  # before the first kernel of this trial on the device
        self.data = data.to(self.device)
        self.step_factory = step_factory
        self.model = build_model(cfg.model, data.input_shape, data.num_classes, cfg.seed).to(
            self.device
        )
        self.theta0 = clone_state(self.model)
        self.layers = {layer.name: layer for layer in weight_layers(self.model)}
        self.names = prunable_names(self.model, cfg.prune.exclude)
        if not self.names:
            raise ValueError(f"prune.exclude {cfg.prune.exclude} leaves no prunable layer")
        p = cfg.prune
        self.fraction: float | dict[str, float] = (
            layer_fractions(self.model, self.names, p.fraction, p.layer_fractions)
            if p.scope == "layerwise"
            else p.fraction
        )
        self.rewind_point = parse_rewind(p.rewind)
        problem = schedule_problem(cfg, len(data.train_x))
        if problem:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        self.state = TrialState(masks={k: v.cpu() for k, v in dense_masks(self.model).items()})
        # the weights the last pruning removed weights from (lr_rewind and finetune retrain them;
        # a ticket publishes them to its controls); a control's copy of its ticket's
        self.pruned_from: StateDict | None = None
        self.kept: StateDict | None = None

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def runtime(self) -> dict[str, str]:
        """What the config left to the machine: the device and the precision that actually ran."""
        return {
            "device": str(self.device),
            "precision": resolve_precision(self.cfg.train.precision, self.device),
        }

    @property
    def rounds_total(self) -> int:
        return self.cfg.prune.rounds + 1

    @property
    def done(self) -> bool:
        return self.state.rounds_done >= self.rounds_total

    def checkpoint(self) -> dict[str, Any]:
        """A plain dict for torch.save: enough to continue at the next round."""
        s = self.state
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "theta0_checksum": self._checksum(self.theta0),
            "rounds_done": s.rounds_done,
            "masks": s.masks,
            "score_best": s.score_best,
            "score_final": s.score_final,
            "rewind": s.rewind,
            "last_final": s.last_final,
            "history": s.history,
            "curves": s.curves,
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {ckpt.get('version')} != {CHECKPOINT_VERSION}")
        if ckpt["config"] != self.cfg.to_dict():
            raise ValueError("checkpoint belongs to a different trial configuration")
        if abs(ckpt["theta0_checksum"] - self._checksum(self.theta0)) > 1e-6 * max(
            1.0, abs(ckpt["theta0_checksum"])
        ):
            raise ValueError("theta_0 rebuilt from the seed differs from the checkpoint's")
        self.state = TrialState(
            rounds_done=ckpt["rounds_done"],
            masks=ckpt["masks"],
            score_best=ckpt["score_best"],
            score_final=ckpt["score_final"],
            rewind=ckpt["rewind"],
            last_final=ckpt["last_final"],
            history=list(ckpt["history"]),
            curves=list(ckpt["curves"]),
        )

    @staticmethod
    def _checksum(state: StateDict) -> float:
        return float(sum(v.double().abs().sum().item() for v in state.values()))

    # -- the procedure ---------------------------------------------------------------------------
    def run(
        self, on_round: Callable[[dict[str, Any], LotteryTrial], None] | None = None
    ) -> list[dict[str, Any]]:
        while not self.done:
            record = self.run_round()
            if on_round is not None:
                on_round(record, self)
        return self.state.history

    def run_round(self) -> dict[str, Any]:
        s, cfg = self.state, self.cfg
        r = s.rounds_done
        skipped, pruned = False, 0
        if r > 0:
            new_masks = self._next_masks(r)
            if new_masks is None:
                skipped = True
            else:
                s.masks, pruned = new_masks

        self.pruned_from = s.score_final if r > 0 else None
        self.kept = None
        steps = round_steps(self.cfg, r, len(self.data.train_x))
        ticket = self._train_branch(r, "ticket", steps)
        reported = ticket
        ticket_acc = None
        if cfg.prune.control != "none" and r > 0:
            ticket_acc = self._test(ticket.best)[1]
            reported = self._train_branch(r, cfg.prune.control, steps)
        return self._finish_round(r, ticket, reported, skipped, pruned, ticket_acc)

    # -- shared work: a dense round 0 computed once per trunk, a ticket's masks for its controls --
    def train_trunk(self, rewind_points: list[tuple[int, str]]) -> TrainResult:
        """Round 0's training alone (the state is untouched), capturing every rewind point the
        trials that share it need: what a shared trunk unit computes once for all of them.
        The weights come back on the CPU."""
        steps = round_steps(self.cfg, 0, len(self.data.train_x))
        result = self._train_branch(0, "ticket", steps, rewind_at=rewind_points)
        return dataclasses.replace(  # on the CPU: it is handed on to other processes
            result,
            best=_cpu(result.best),
            final=_cpu(result.final),
            rewind=_cpu(result.rewind),
            rewinds={k: _cpu(v) for k, v in result.rewinds.items()},
        )

    def start_from_trunk(self, trunk: TrainResult) -> dict[str, Any]:
        """Round 0 from a shared trunk: the same record and state as training it here."""
        if self.state.rounds_done:
            raise ValueError("a trunk starts a trial at round 0")
        own = trunk.rewinds.get(self.rewind_point) if self.rewind_point is not None else None
        if self.rewind_point is not None and own is None:
            raise ValueError(f"the trunk did not capture rewind point {self.cfg.prune.rewind!r}")
        ticket = dataclasses.replace(trunk, rewind=own)
        return self._finish_round(0, ticket, ticket, False, 0, None)

    def run_control_round(
        self,
        masks: Masks,
        ticket_record: dict[str, Any],
        kept: StateDict | None = None,
    ) -> dict[str, Any]:
        """A control's level from its ticket's mask at that level (the ticket trained elsewhere):
        the same record as a control trial that trains the ticket itself. Under lr_rewind and
        finetune the ticket's start weights are the ones it pruned (`kept`, the ticket's
        `pruned_from`); iterative pruning needs them from the ticket."""
        s, r = self.state, self.state.rounds_done
        if self.cfg.prune.control == "none" or r == 0:
            raise ValueError("run_control_round is for the pruned rounds of a control trial")
        p = self.cfg.prune
        if p.retrain_mode != "weight_rewind" and p.schedule == "iterative" and kept is None:
            raise ValueError(
                f"a control under prune.retrain_mode {p.retrain_mode!r} needs the weights its"
                " ticket pruned at this level"
            )
        self.kept = None if kept is None else {k: v.cpu() for k, v in kept.items()}
        s.masks = {k: v.cpu() for k, v in masks.items()}
        steps = round_steps(self.cfg, r, len(self.data.train_x))
        reported = self._train_branch(r, self.cfg.prune.control, steps)
        return self._finish_round(
            r,
            None,
            reported,
            bool(ticket_record["skipped"]),
            int(ticket_record["pruned"]),
            ticket_record["test_acc"],
        )

    def adopt_level(
        self,
        masks: Masks,
        record: dict[str, Any],
        curve: list[dict[str, float]],
        final: StateDict,
    ) -> dict[str, Any]:
        """A one-shot trial's level 1 from its iterative ticket's (trained elsewhere): pruning the
        dense net once to level 1 is the ticket's first prune (the same scores, count and draw), and
        the retraining is the same, so the record, curve and weights are the ticket's."""
        s = self.state
        if self.cfg.prune.schedule != "one_shot" or s.rounds_done != 1:
            raise ValueError("adopt_level is a one-shot trial's level 1")
        s.masks = {k: v.cpu() for k, v in masks.items()}
        s.last_final = _cpu(final)
        record = dict(record)
        s.history.append(record)
        s.curves.append([dict(e) for e in curve])
        s.rounds_done = 2
        return record

    def instability_pair(
        self,
        w_k: StateDict,
        masks: Masks,
        k: str,
        level: int,
        pair: int,
        points: int = 30,
        train_subset: int = 10_000,
        batchnorm: str = "recompute",
    ) -> PairResult:
        """One noise pair of the instability analysis: two copies from masks * W_k to the end of
        the round (T - k steps), their data order from two noise seeds of their own (derived from
        (seed, k, level, pair, copy), apart from every draw of the trial), and the error along the
        path between them. The trial's state is untouched."""
        steps = branch_steps(self.cfg, level, parse_steps(k), len(self.data.train_x))
        noise = (
            derive_seed(self.cfg.seed, "instability", k, level, pair, 1),
            derive_seed(self.cfg.seed, "instability", k, level, pair, 2),
        )
        start = {n: v.to(self.device) for n, v in w_k.items()}
        return analyse_pair(
            self.model,
            start,
            masks,
            self.data,
            self.cfg.train,
            steps,
            noise,
            points,
            train_subset,
            batchnorm,
        )

    def _finish_round(
        self,
        r: int,
        ticket: TrainResult | None,
        reported: TrainResult,
        skipped: bool,
        pruned: int,
        ticket_acc: float | None,
    ) -> dict[str, Any]:
        s, cfg = self.state, self.cfg
        if r == 0 and ticket is not None:
            s.rewind = _cpu(ticket.rewind)
        if ticket is not None and (r == 0 or cfg.prune.schedule == "iterative"):
            s.score_best, s.score_final = _cpu(ticket.best), _cpu(ticket.final)
        # usually the same weights as score_final: share them (the checkpoint then stores them once)
        same = reported is ticket and (r == 0 or cfg.prune.schedule == "iterative")
        s.last_final = s.score_final if same else _cpu(reported.final)

        record = self._record(r, reported, skipped, pruned)
        if ticket_acc is not None:
            record["ticket_test_acc"] = ticket_acc
        s.history.append(record)
        s.curves.append([vars(e).copy() for e in reported.curve])
        s.rounds_done = r + 1
        return record

    def _next_masks(self, r: int) -> tuple[Masks, int] | None:
        """The next level's masks and how many weights this level removed (None: pruned nothing).

        Iterative: score the last retrained net among the current survivors. One-shot: score the
        dense net among all weights (a dense mask in the context) and prune straight to the level.
        Criteria that compare with the start (movement, large_init_large_final) compare with where
        survivors restart: theta_0, or the rewind point under late rewinding.
        """
        s, p = self.state, self.cfg.prune
        start = s.rewind if self.rewind_point is not None else self.theta0
        dense = {k: torch.ones_like(v) for k, v in s.masks.items()}
        ctx = ScoreContext(
            init={n: start[n].cpu() for n in self.names},
            best={n: s.score_best[n] for n in self.names},
            final={n: s.score_final[n] for n in self.names},
            masks=s.masks if p.schedule == "iterative" else dense,
            generator=generator(self.cfg.seed, "criterion", r),
            scope=p.scope,
        )
        scores = CRITERIA.get(p.criterion)(ctx, self.names)
        if scores is None:
            return None
        before = sum(int(s.masks[n].sum()) for n in self.names)
        if p.schedule == "iterative":
            masks, _ = prune(scores, s.masks, self.names, self.fraction, p.scope)
        else:
            active = (
                sum(int(dense[n].sum()) for n in self.names)
                if p.scope == "global"
                else {n: int(dense[n].sum()) for n in self.names}
            )
            plan = schedule_remaining(active, self.fraction, p.rounds, p.scope)
            masks, _ = prune_to(scores, dense, self.names, plan[r - 1], p.scope)
        return masks, before - sum(int(masks[n].sum()) for n in self.names)

    def _draw(self, r: int, branch: str) -> tuple[Any, ...]:
        """What a branch's random draws derive from: a control's include its kind and index, so
        repeated controls, and controls of different seeds and rounds, never share a draw."""
        if branch == "ticket":
            return (self.cfg.seed, r, branch)
        return (self.cfg.seed, r, branch, self.cfg.prune.control_index)

    def _start_weights(self, r: int, branch: str) -> StateDict:
        if branch == "reinit":  # same architecture and initialiser, an independent draw
            seed = derive_seed(*self._draw(r, branch), "init")
            return build_model(
                self.cfg.model, self.data.input_shape, self.data.num_classes, seed
            ).state_dict()
        if r > 0 and self.cfg.prune.retrain_mode != "weight_rewind":
            return self.kept if self.kept is not None else self.state.score_final
        if r > 0 and self.rewind_point is not None:
            return self.state.rewind
        return self.theta0

    def _branch_masks(self, r: int, branch: str) -> Masks:
        if branch != "random_mask":
            return self.state.masks
        return random_like(self.state.masks, self.names, generator(*self._draw(r, branch), "mask"))

    def _train_branch(
        self,
        r: int,
        branch: str,
        steps: tuple[int, str],
        rewind_at: tuple[int, str] | list[tuple[int, str]] | None = None,
    ) -> TrainResult:
        self.model.load_state_dict(self._start_weights(r, branch))
        masks = {k: v.to(self.device) for k, v in self._branch_masks(r, branch).items()}
        apply_masks(self.model, masks)
        seed, *rest = self._draw(r, branch)
        n_train = len(self.data.train_x)
        kinds = list(self.cfg.dataset.augment)

        def draws(epoch: int) -> augment.Draws:
            return augment.draw(kinds, n_train, generator(seed, "augment", *rest, epoch))

        return fit(
            self.model,
            masks,
            self.data,
            self.cfg.train,
            steps,
            generator(seed, "data", *rest),
            rewind_at=rewind_at
            if rewind_at is not None
            else (self.rewind_point if r == 0 else None),
            step_factory=self.step_factory,
            start=round_start(self.cfg, r, n_train),
            lrs=torch.tensor(learning_rates(self.cfg, r, n_train), dtype=torch.float32),
            augment=draws if kinds else None,
        )

    def _test(self, weights: StateDict) -> tuple[float, float]:
        self.model.load_state_dict(weights)
        return evaluate(self.model, self.data.test_x, self.data.test_y, self.cfg.train, self.device)

    def _record(self, r: int, result: TrainResult, skipped: bool, pruned: int) -> dict[str, Any]:
        test_loss_final, test_acc_final = self._test(result.final)
        test_loss, test_acc = self._test(result.best)
        masks = {k: v.to(self.device) for k, v in self.state.masks.items()}
        rep = sparsity_report(self.model, masks, self.names, self.data.input_shape)
        record: dict[str, Any] = {
            "round": r,
            "sparsity": rep.sparsity,
            "weights_remaining": rep.weights_remaining,
            "sparsity_all": rep.sparsity_all,
            "zeros_all": rep.zeros_all,
            "active_weights": rep.active_weights,
            "test_acc": test_acc,
            "test_loss": test_loss,
            "test_acc_final": test_acc_final,
            "test_loss_final": test_loss_final,
            "val_loss_best": result.best_val_loss,
            "val_acc_best": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "best_iteration": result.best_iteration,
            "epochs": result.curve[-1].epoch if result.curve else 0,
            "iterations": result.curve[-1].iteration if result.curve else 0,
            "evaluations": len(result.curve),
            "skipped": int(skipped),
            "pruned": pruned,
            "train_seconds": result.seconds,
            "images_per_s": result.images_per_s,
            "compression_ratio": rep.compression_ratio,
            "flops_reduction": rep.flops_reduction,
        }
        for name, value in rep.per_layer.items():
            record[f"sparsity/{name}"] = value
        return record
