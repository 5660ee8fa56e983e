"""Table 2 of the paper: SUPERB ASR word error rates on the test set, without and with the
language model, for our models beside the paper's rows (``results/table2.csv`` and ``.md``).

Each of our rows names the paper row it reproduces (``paper_row``, a model name of the paper's
Table 2, or none); that paper row follows it in italics, and the paper's other rows (the
wav2vec / HuBERT / DeCoAR baselines) close the table as the reference the paper compared with.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from encodecmae.report.table import encoder_params_m

COLUMNS = ["model", "label", "source", "wer_no_lm", "wer_with_lm", "cer_no_lm", "params_m"]


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2: WER (%) on LibriSpeech test-clean without / with the 4-gram LM."""
    from encodecmae.evaluation.scores import _read_csv

    return _read_csv("paper_table2.csv")


def build_table2(spec: list[dict], scores: dict[str, dict], params_m: dict[str, float]) -> pd.DataFrame:
    paper = paper_table2().set_index("model")
    unknown = [m["paper_row"] for m in spec if m.get("paper_row") and m["paper_row"] not in paper.index]
    if unknown:
        raise ValueError(f"paper_row {unknown} is not a row of the paper's Table 2 ({', '.join(paper.index)})")
    rows, shown = [], set()
    for m in spec:
        s = scores[m["name"]]
        rows.append({"model": m["name"], "label": m["label"], "source": "released" if m.get("released") else "ours",
                     "wer_no_lm": round(100 * s["wer_greedy"], 2), "wer_with_lm": round(100 * s["wer_lm"], 2),
                     "cer_no_lm": round(100 * s["cer_greedy"], 2),
                     "params_m": round(params_m.get(m["name"], math.nan), 2)})
        row = m.get("paper_row")
        if row and row not in shown:
            shown.add(row)
            p = paper.loc[row]
            rows.append({"model": m["name"], "label": f"paper: {row}", "source": "paper",
                         "wer_no_lm": p["wer_no_lm"], "wer_with_lm": p["wer_with_lm"], "params_m": p["params_m"]})
    for row, p in paper.iterrows():  # the paper's other rows: its baselines and the rows not reproduced
        if row not in shown:
            rows.append({"model": "", "label": f"paper: {row}", "source": "paper", "wer_no_lm": p["wer_no_lm"],
                         "wer_with_lm": p["wer_with_lm"], "params_m": p["params_m"]})
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def describe_downstream(settings: dict | None) -> str:
    """The downstream in words, from a scores file's ``downstream`` settings."""
    if not settings or settings.get("lstm_layers") is None:
        return "a BiLSTM-CTC"
    return (f"a {settings['lstm_layers']}-layer BiLSTM-CTC ({settings['hidden']} units per direction, projection "
            f"{settings['proj']}; {settings['steps']:,} steps of {settings['batch_size']} utterances, Adam "
            f"{settings['lr']:g})")


def to_markdown(table: pd.DataFrame, test_set: str, downstream: str = "a BiLSTM-CTC") -> str:
    def num(v, fmt):
        return "" if pd.isna(v) else format(v, fmt)

    lines = ["| Model | WER w/o LM | WER w/ LM | CER w/o LM | Params (M) |", "|---|---|---|---|---|"]
    for _, r in table.iterrows():
        label = f"*{r['label']}*" if r["source"] == "paper" else r["label"]
        lines.append(f"| {label} | {num(r['wer_no_lm'], '.2f')} | {num(r['wer_with_lm'], '.2f')} | "
                     f"{num(r['cer_no_lm'], '.2f')} | {num(r['params_m'], 'g')} |")
    ours = (table.source != "paper").any()  # trained here, or released weights through our protocol
    note = (f"\nWord error rates in percent on {test_set}: greedy CTC decoding (w/o LM) and a lexicon beam search "
            f"under the n-gram LM (w/ LM), of {downstream} trained on a learned mix of the frozen encoder's "
            "layers (SUPERB's downstream: 2 layers of 1,024 units, 200,000 steps of 32). CER: character error rate "
            "of the greedy decoding (an all-blank output scores 100). Rows in italics are the paper's Table 2 "
            "(LibriSpeech test-clean)." if ours else
            "\nNo model of ours is evaluated (the configuration's asr.models is empty). Rows in italics are the "
            "paper's Table 2: word error rates in percent on LibriSpeech test-clean, greedy (w/o LM) and with the "
            "4-gram LM (w/ LM).")
    return "\n".join(lines) + "\n" + note + "\n"


def make_table2(spec: list[dict], score_files: list[str | Path], checkpoints: list[str | Path], out_csv: str | Path,
                out_md: str | Path, test_set: str = "the test set") -> pd.DataFrame:
    scores = {Path(f).parent.name: json.loads(Path(f).read_text()) for f in score_files}  # .../MODEL/scores.json
    missing = [m["name"] for m in spec if m["name"] not in scores]
    if missing:
        raise ValueError(f"no ASR score file for {missing}")
    params = {Path(c).parent.name: encoder_params_m(c) for c in checkpoints}  # results/models/MODEL/model.pt
    table = build_table2(spec, scores, params)
    settings = [scores[m["name"]].get("downstream") for m in spec]
    # one description for the table when every row's downstream was trained alike
    alike = settings and all(s == settings[0] for s in settings)
    downstream = describe_downstream(settings[0]) if alike else "a BiLSTM-CTC"
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    Path(out_md).write_text(to_markdown(table, test_set, downstream))
    return table


def register(sub) -> None:
    p = sub.add_parser("make-table2", help="Table 2 of the paper (ASR word error rates) from the ASR score files")
    p.add_argument("--spec", required=True, help="JSON list of {name, label, paper_row, released} in config order")
    p.add_argument("--scores", nargs="*", default=[], help="ASR score JSONs, .../MODEL/scores.json (none: the "
                   "paper's rows only)")
    p.add_argument("--checkpoints", nargs="*", default=[], help=".../MODEL/model.pt")
    p.add_argument("--test-set", default="the test set", help="what the WERs were measured on (for the note)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=cmd_make_table2)


def cmd_make_table2(args: argparse.Namespace) -> None:
    table = make_table2(json.loads(args.spec), args.scores, args.checkpoints, args.out_csv, args.out_md, args.test_set)
    print(table.to_string())
