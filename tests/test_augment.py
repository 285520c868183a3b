"""Flip + crop as batched tensor ops: what they do to images, determinism per (seed, round, epoch),
and the data stream resumed at step k."""

from __future__ import annotations

import torch

from lth_ray.lottery import augment
from lth_ray.lottery.models import build_model
from lth_ray.lottery.pruning import dense_masks
from lth_ray.lottery.train import plain_step, train
from lth_ray.lottery.trial import generator
from lth_ray.specs import TrainSpec


def _images(n=6, c=3, h=8, w=8):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1.0  # no zeros


def test_crop_is_a_shift_within_four_pixels_padded_with_black():
    x = _images()
    n = len(x)
    black = torch.tensor([-1.0, -2.0, -3.0])
    for dy, dx in [(0, 0), (4, 4), (8, 8), (1, 7), (6, 2)]:
        dys, dxs = torch.full((n,), dy), torch.full((n,), dx)
        out = augment.apply(x, dys, dxs, torch.zeros(n, dtype=torch.bool), black)
        padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
        for ch in range(3):
            padded[:, ch][padded[:, ch] == 0] = black[ch]
        assert torch.equal(out, padded[:, :, dy : dy + 8, dx : dx + 8])
    centre = augment.apply(
        x, torch.full((n,), 4), torch.full((n,), 4), torch.zeros(n, dtype=torch.bool), black
    )
    assert torch.equal(centre, x)


def test_flip_mirrors_columns_per_example():
    x = _images()
    flip = torch.tensor([True, False, True, False, False, True])
    out = augment.apply(x, torch.full((6,), 4), torch.full((6,), 4), flip, torch.zeros(3))
    assert torch.equal(out[flip], x[flip].flip(3)) and torch.equal(out[~flip], x[~flip])


def test_draws_are_deterministic_per_seed_and_vary_by_epoch():
    n = 4000
    a = augment.draw(["crop", "flip"], n, generator(0, "augment", 1, "ticket", 3))
    b = augment.draw(["crop", "flip"], n, generator(0, "augment", 1, "ticket", 3))
    c = augment.draw(["crop", "flip"], n, generator(0, "augment", 1, "ticket", 4))
    assert torch.equal(a.dy, b.dy) and torch.equal(a.dx, b.dx) and torch.equal(a.flip, b.flip)
    assert not torch.equal(a.dy, c.dy) and not torch.equal(a.flip, c.flip)
    offsets = torch.cat([a.dy, a.dx]) - augment.PAD
    assert offsets.min() == -4 and offsets.max() == 4  # every shift in -4..+4 occurs
    assert (
        set(torch.bincount(offsets + 4).tolist()) != {0} and len(torch.bincount(offsets + 4)) == 9
    )
    assert abs(a.flip.float().mean().item() - 0.5) < 0.03  # about half flipped
    only_flip = augment.draw(["flip"], n, generator(0))
    assert bool((only_flip.dy == augment.PAD).all() and (only_flip.dx == augment.PAD).all())


def test_augmentation_changes_the_images_the_step_sees():
    torch.manual_seed(0)
    from lth_ray.lottery.data import DataSplits

    x = torch.rand(40, 3, 8, 8) + 0.1
    y = torch.randint(0, 2, (40,))
    data = DataSplits(x, y, x[:10], y[:10], x[:10], y[:10], ["a", "b"], torch.zeros(3))
    seen = []

    def recording(model, masks, optimizer, spec, device):
        inner = plain_step(model, masks, optimizer, spec, device)

        def step(xb, yb):
            seen.append(xb.clone())
            return inner(xb, yb)

        return step

    spec = TrainSpec(optimizer="sgd", lr=0.01, batch_size=40, device="cpu")
    from lth_ray.specs import ModelSpec

    model = build_model(ModelSpec(arch="conv2", width=0.125), (3, 8, 8), 2, 0)
    draws = lambda epoch: augment.draw(["crop", "flip"], 40, generator(0, "augment", epoch))  # noqa: E731
    train(
        model,
        dense_masks(model),
        data,
        spec,
        (2, "ep"),
        torch.Generator().manual_seed(0),
        step_factory=recording,
        augment=draws,
    )
    assert len(seen) == 2
    changed = (
        (seen[0] != x[torch.randperm(40, generator=torch.Generator().manual_seed(0))])
        .flatten(1)
        .any(1)
    )
    assert changed.float().mean() > 0.7  # most examples are shifted or flipped
    assert bool((seen[0] == 0).any())  # black padding entered the image


def test_a_round_started_at_k_sees_the_streams_batches_from_k():
    """Data order and augmentation continue from step k: starting at k = 7 (mid-epoch, 5 batches per
    epoch) trains on exactly the batches a run from 0 trains on from its 8th step on."""
    from lth_ray.lottery.data import DataSplits
    from lth_ray.specs import ModelSpec

    torch.manual_seed(1)
    x, y = torch.rand(50, 3, 8, 8), torch.randint(0, 2, (50,))
    data = DataSplits(x, y, x[:10], y[:10], x[:10], y[:10], ["a", "b"], torch.zeros(3))
    spec = TrainSpec(optimizer="sgd", lr=0.01, batch_size=10, device="cpu")

    def batches(start: int, steps: int) -> list[torch.Tensor]:
        seen = []

        def recording(model, masks, optimizer, spec, device):
            inner = plain_step(model, masks, optimizer, spec, device)
            return lambda xb, yb: (seen.append(xb.clone()), inner(xb, yb))[1]

        model = build_model(ModelSpec(arch="conv2", width=0.125), (3, 8, 8), 2, 0)
        draws = lambda e: augment.draw(["crop", "flip"], 50, generator(0, "augment", e))  # noqa: E731
        result = train(
            model,
            dense_masks(model),
            data,
            spec,
            (steps, "it"),
            torch.Generator().manual_seed(0),
            step_factory=recording,
            start=start,
            augment=draws,
        )
        assert result.curve[-1].iteration == steps
        return seen

    full, resumed = batches(0, 15), batches(7, 8)
    assert len(resumed) == 8
    assert all(torch.equal(a, b) for a, b in zip(full[7:], resumed))
