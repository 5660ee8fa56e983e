"""The paper's "Global" score over six HEAR tasks, and the reference tables it is checked on.

For each task t: ``z_t = clip((score_t - mean_t) / std_t, -1, 1)`` and
``Global = 100 * mean_t z_t``. ``mean_t`` and ``std_t`` describe how the HEAR 2021 entries did
on task t: the leaderboard rows with ``in_hear2021 == True`` (29 submissions), missing cells
skipped, sample standard deviation (ddof=1), scores as fractions. This recipe reproduces
every Global value of the paper's Table 1 to within the rounding of its inputs, which
``tests/test_scores.py`` checks.

The two CSV tables ship inside the package (``encodecmae/evaluation/tables/``) so that CI and users do not
need the project's shared reference folder.
"""

from __future__ import annotations

from importlib import resources
from typing import Mapping

import numpy as np
import pandas as pd

# Paper short name -> HEAR task name (also the leaderboard column), in the paper's column order.
PAPER_TASKS: dict[str, str] = {
    "NS": "nsynth_pitch-v2.2.3-50h",
    "GC": "tfds_gtzan-1.0.0-full",
    "SC": "speech_commands-v0.0.2-full",
    "ER": "tfds_crema_d-1.0.0-full",
    "FSD": "fsd50k-v1.0-full",
    "ESC": "esc50-v2.0.0-full",
}
HEAR_TO_SHORT = {hear: short for short, hear in PAPER_TASKS.items()}


def _read_csv(name: str) -> pd.DataFrame:
    with resources.files("encodecmae.evaluation").joinpath("tables", name).open("r") as f:
        return pd.read_csv(f)


def hear2021_leaderboard() -> pd.DataFrame:
    """The HEAR leaderboard rows (scores as fractions), including post-2021 additions."""
    return _read_csv("hear2021_leaderboard.csv")


def paper_table1() -> pd.DataFrame:
    """Table 1 of the EnCodecMAE paper: scores, "±" and Global in percent, one row per line."""
    return _read_csv("paper_table1.csv")


def leaderboard_stats() -> pd.DataFrame:
    """Per-task mean and sample std (ddof=1) of the HEAR 2021 entries, and how many there were.

    Indexed by the paper's short names; columns ``hear_task``, ``mean``, ``std``, ``n``.
    Post-2021 additions (``in_hear2021 == False``) are excluded: the paper normalises against
    the 2021 benchmark results. Entries without a score on a task are skipped for that task.
    """
    board = hear2021_leaderboard()
    in_2021 = board["in_hear2021"].astype(str).str.lower() == "true"
    board = board[in_2021]
    rows = {}
    for short, hear in PAPER_TASKS.items():
        col = pd.to_numeric(board[hear], errors="coerce").dropna()
        rows[short] = {"hear_task": hear, "mean": col.mean(), "std": col.std(ddof=1), "n": len(col)}
    return pd.DataFrame.from_dict(rows, orient="index")


def normalized_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """Clipped z-score of each of the six tasks; keys: paper short names (or HEAR task names).

    Scores are fractions (0.85, not 85). All six tasks are required: a Global over fewer tasks
    is not comparable with the paper's.
    """
    by_short = {HEAR_TO_SHORT.get(k, k): float(v) for k, v in scores.items()}
    unknown = sorted(set(by_short) - set(PAPER_TASKS))
    missing = [t for t in PAPER_TASKS if t not in by_short]
    if unknown or missing:
        raise ValueError(
            f"global score needs exactly {list(PAPER_TASKS)}; missing {missing}, unknown {unknown}"
        )
    above_one = [t for t, v in by_short.items() if v > 1.0]
    if above_one:
        raise ValueError(f"scores must be fractions in [0, 1]; got percentages? {above_one}")
    stats = leaderboard_stats()
    return {
        t: float(np.clip((by_short[t] - stats.at[t, "mean"]) / stats.at[t, "std"], -1.0, 1.0))
        for t in PAPER_TASKS
    }


def global_score(scores: Mapping[str, float]) -> float:
    """The paper's Global: 100 x the mean clipped z-score over the six tasks (fractions in)."""
    return 100.0 * float(np.mean(list(normalized_scores(scores).values())))
