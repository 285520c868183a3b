"""The instability section of the report: the table across seeds, its statuses and the verdict."""

from __future__ import annotations

import pandas as pd

from lth_ray.report.instability import figures, instability_table, verdict_lines


def pairs(values: dict[tuple[int, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (level, k), per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rows.append(
                {
                    "seed": seed,
                    "k": k,
                    "level": level,
                    "pair": 0,
                    "threshold": 0.02,
                    "instability_test": v,
                    "instability_train": v / 2,
                    "weights_remaining": 100.0 if level == 0 else 51.2,
                }  # fmt: skip
            )
    return pd.DataFrame(rows)


def test_stable_from_the_earliest_k_after_which_every_k_is_stable():
    table = instability_table(
        pairs(
            {
                (0, "0it"): [0.001, 0.002, 0.0015],  # stable, then not shown stable at 100it
                (0, "100it"): [0.00, 0.05, 0.01],
                (0, "500it"): [0.001, 0.002, 0.003],
                (0, "2000it"): [0.000, 0.001, 0.002],
                (3, "0it"): [0.10, 0.12, 0.11],
                (3, "100it"): [0.10, 0.12, 0.11],
                (3, "500it"): [0.11, 0.10, 0.12],
                (3, "2000it"): [0.09, 0.10, 0.11],
            }
        )
    )
    test = table[table["split"] == "test"].set_index(["level", "k"])
    assert test.loc[(0, "0it"), "status"] == "stable"
    assert test.loc[(0, "100it"), "status"] == "inconclusive"  # the interval spans 2 points
    assert test.loc[(3, "500it"), "status"] == "unstable"
    assert abs(test.loc[(0, "0it"), "instability_pp"] - 0.15) < 1e-9  # in points
    assert list(table[(table.split == "test") & (table.level == 0)]["k"]) == [
        "0it",
        "100it",
        "500it",
        "2000it",
    ]  # ordered by k, not as strings
    lines = verdict_lines(table)
    assert lines[0].startswith("stable from k = 500it at dense (100.0% of weights)")
    assert "3 seeds" in lines[0]
    assert lines[1].startswith("level 3 (51.2% of weights): not shown stable")
    figs = figures(table, pd.DataFrame())
    assert {"instability_vs_k_test", "instability_vs_weights_train"} <= set(figs)


def test_one_seed_gives_no_interval_and_no_stability_claim():
    table = instability_table(pairs({(0, "0it"): [0.0], (0, "100it"): [0.0]}))
    assert set(table["status"]) == {"no interval (one seed)"}
    assert "not shown stable" in verdict_lines(table)[0]
