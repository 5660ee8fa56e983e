"""Results: the Table 1 reproduction (CSV + Markdown).

``make-table`` reads one score JSON per (model, task) (``score-task`` output), the task
metadata (which paper task each task stands for) and the model checkpoints (parameter
counts), and writes one row per model with the six scores in percent, their "±", the Global
score and the encoder's parameter count, with the paper's Table 1 line beside it when the
experiment names one: per line, our retrained model, the authors' released weights through our
protocol (experiment rows with ``released``), then the paper's row. Each of our rows also names what made it (``PROVENANCE_COLUMNS``, from the
``provenance`` block of its score files): the code commit(s), the training run and the data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from encodecmae.evaluation.scores import PAPER_TASKS, global_score, paper_table1
from encodecmae.evaluation.tasks import task_short_name
from encodecmae.provenance import UNKNOWN, combine_sha256, merge_code_states, result_code_states

SHORT = list(PAPER_TASKS)  # NS GC SC ER FSD ESC, the paper's column order
# What made a row (empty for the paper's rows):
# code_commit: every commit whose code made a score of the row (training, also of the model it
#   was initialised from, embedding, scoring), distinct ones joined with '+'; "unknown" outside git
# code_dirty: whether any of them ran on a tree that differed from its commit (empty: unknown)
# run_key: the training run (name of its step-checkpoint directory)
# settings_sha256, train_data_sha256: 12-hex prefixes of the model's settings and training-data hashes
# eval_data_sha256: 12-hex prefix of one hash over the row's task-folder hashes in column order
PROVENANCE_COLUMNS = ["code_commit", "code_dirty", "run_key", "settings_sha256", "train_data_sha256",
                      "eval_data_sha256"]
SHORT_HASH = 12


def encoder_params_m(checkpoint: str | Path) -> float:
    from encodecmae.training.checkpoints import load_model
    from encodecmae.model.transformer import paper_param_count

    return paper_param_count(load_model(checkpoint)) / 1e6


def _joined(values: list) -> str:
    """Distinct values in order, joined with '+' (several only if the row's scores disagree)."""
    return "+".join(dict.fromkeys(UNKNOWN if v is None else str(v) for v in values))


def row_provenance(score_results: list[dict]) -> dict:
    """The provenance columns of one row from its score files' results, in column order."""
    provs = [r.get("provenance") for r in score_results]
    code = merge_code_states(*(state for p in provs for state in result_code_states(p)))
    models = [(p or {}).get("model") or {} for p in provs]

    def model_field(key: str, short: bool) -> str:
        return _joined([m[key][:SHORT_HASH] if short and m.get(key) else m.get(key) for m in models])

    task_hashes = [(p or {}).get("task_data_sha256") for p in provs]
    return {
        "code_commit": code["code_commit"],
        "code_dirty": code["code_dirty"],
        "run_key": model_field("run_key", False),
        "settings_sha256": model_field("settings_sha256", True),
        "train_data_sha256": model_field("train_data_sha256", True),
        "eval_data_sha256": UNKNOWN if None in task_hashes else combine_sha256(task_hashes)[:SHORT_HASH],
    }


def table_order(spec: list[dict]) -> list[dict]:
    """The spec's rows in config order, except that the rows of one paper line come together
    (trained here, then released weights) where the first of them stands, followed by the paper's
    row: ``{"paper_line": N}`` entries mark where the paper's rows go."""
    out, done = [], set()
    for m in spec:
        line = m.get("paper_line")
        if line is None:
            out.append(m)
        elif line not in done:
            done.add(line)
            same = [r for r in spec if r.get("paper_line") == line]
            same = sorted(same, key=lambda r: bool(r.get("released")))
            out += same + [{"paper_line": line, "model": same[0]["name"]}]
    return out


def build_table(spec: list[dict], scores: dict[tuple[str, str], dict], task_short: dict[str, str],
                params_m: dict[str, float]) -> pd.DataFrame:
    """One row per model, then the paper's row of its line; scores in percent. Source: ``ours``
    (trained here), ``released`` (the authors' weights through our protocol) or ``paper``."""
    paper = paper_table1().set_index("line")
    rows = []
    for m in table_order(spec):
        if "name" not in m:
            line = m["paper_line"]
            p = paper.loc[int(line)]
            prow = {"model": m["model"], "label": f"paper ({line}) {p['model']}", "source": "paper"}
            for short in SHORT:
                prow[short] = p[short]
                prow[f"{short}_ci"] = p[f"{short}_ci"]
            prow["global"], prow["params_m"] = p["global"], p["params_m"]
            rows.append(prow)
            continue
        name = m["name"]
        row = {"model": name, "label": m["label"], "source": "released" if m.get("released") else "ours"}
        fractions = {}
        for task, short in task_short.items():
            s = scores[(name, task)]
            row[short] = round(100 * s["score"], 1)
            row[f"{short}_ci"] = round(100 * s["ci_pm"], 1)
            fractions[short] = s["score"]
        row["global"] = round(global_score(fractions), 1) if set(fractions) == set(SHORT) else None
        row["params_m"] = round(params_m[name], 2)
        in_columns = sorted(task_short, key=lambda t: SHORT.index(task_short[t]))
        row.update(row_provenance([scores[(name, t)] for t in in_columns]))
        rows.append(row)
    cols = ["model", "label", "source"] + [c for s in SHORT for c in (s, f"{s}_ci")] + ["global", "params_m"]
    cols += PROVENANCE_COLUMNS
    return pd.DataFrame(rows).reindex(columns=cols)


def to_markdown(table: pd.DataFrame) -> str:
    def cell(r, s):
        v, ci = r[s], r[f"{s}_ci"]
        if pd.isna(v):
            return ""
        return f"{v:.1f}" + ("" if pd.isna(ci) else f"±{ci:.1f}")

    head = "| Model | " + " | ".join(SHORT) + " | Global | Params (M) |"
    lines = [head, "|" + "---|" * (len(SHORT) + 3)]
    for _, r in table.iterrows():
        label = f"*{r['label']}*" if r["source"] == "paper" else r["label"]
        g = "" if pd.isna(r["global"]) else f"{r['global']:.1f}"
        lines.append(f"| {label} | " + " | ".join(cell(r, s) for s in SHORT) + f" | {g} | {r['params_m']:g} |")
    note = ("\nScores in percent (accuracy; mAP for FSD) with the half-width of the 95 % bootstrap interval "
            "(100 iterations, distance to the furthest bound). Global: clipped z-scores against the HEAR 2021 "
            "entries, x100. Params: encoder parameters per use (the paper's count: a feed-forward block shared by "
            "the layers counts once per layer). Rows in italics are the paper's Table 1 lines the rows above "
            "them reproduce.\n")
    return "\n".join(lines) + "\n" + note + provenance_notes(table)


def provenance_notes(table: pd.DataFrame) -> str:
    """One short line per row of ours: what made it (the full values are in the CSV)."""
    ours = table[table["source"] != "paper"]
    if not len(ours) or "code_commit" not in table:
        return ""
    out = ["\nProvenance (code commit; run key; SHA-256 prefixes of settings, training data, evaluation data):\n"]
    for _, r in ours.iterrows():
        commit = "+".join(c[:SHORT_HASH] for c in str(r["code_commit"]).split("+"))
        dirty = {True: " (dirty)", False: ""}.get(r["code_dirty"], " (dirty: unknown)")
        out.append(f"- {r['label']}: {commit}{dirty}; run {r['run_key']}; settings {r['settings_sha256']}, "
                   f"train {r['train_data_sha256']}, eval {r['eval_data_sha256']}")
    return "\n".join(out) + "\n"


def make_table(spec: list[dict], score_files: list[str | Path], task_dirs: list[str | Path],
               checkpoints: list[str | Path], out_csv: str | Path, out_md: str | Path) -> pd.DataFrame:
    scores = {}
    for f in score_files:
        f = Path(f)  # results/scores/MODEL/TASK.json
        scores[(f.parent.name, f.stem)] = json.loads(f.read_text())
    named = {Path(d).name: task_short_name(d) for d in task_dirs}
    task_short = {task: short for task, (short, _) in named.items()}
    dup = {s for s in task_short.values() if list(task_short.values()).count(s) > 1}
    if dup:
        raise ValueError(f"several tasks stand for the same paper column(s) {sorted(dup)}: {task_short}")
    params = {Path(c).parent.name: encoder_params_m(c) for c in checkpoints}  # results/models/MODEL/model.pt
    missing = [(m["name"], t) for m in spec for t in task_short if (m["name"], t) not in scores]
    if missing:
        raise ValueError(f"no score file for {missing}")
    table = build_table(spec, scores, task_short, params)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    others = [f"{short}: {variant} (the paper: {PAPER_TASKS[short]})" for short, variant in named.values()
              if variant]
    note = f"\nTasks other than the paper's versions: {'; '.join(others)}.\n" if others else ""
    Path(out_md).write_text(to_markdown(table) + note)
    return table


def cmd_make_table(args: argparse.Namespace) -> None:
    table = make_table(spec=json.loads(args.spec), score_files=args.scores, task_dirs=args.task_dirs,
                       checkpoints=args.checkpoints, out_csv=args.out_csv, out_md=args.out_md)
    print(table.to_string())


def register(sub) -> None:
    p = sub.add_parser("make-table", help="Table 1 of the paper from score files (CSV + Markdown)")
    p.add_argument("--spec", required=True, help="JSON list of {name, label, paper_line, released} in config order")
    p.add_argument("--scores", nargs="+", required=True, help="score JSONs, .../MODEL/TASK.json")
    p.add_argument("--task-dirs", nargs="+", required=True)
    p.add_argument("--checkpoints", nargs="+", required=True, help=".../MODEL/model.pt")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=cmd_make_table)
