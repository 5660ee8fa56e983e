"""Table 2 (ASR word error rates): our rows beside the paper's."""

from __future__ import annotations

import pytest

from encodecmae.report.table2 import build_table2, paper_table2, to_markdown


def test_our_rows_are_followed_by_the_paper_row_they_reproduce_then_the_baselines():
    spec = [{"name": "a", "label": "A", "paper_row": "Mel256->EC (Base)"},
            {"name": "b", "label": "B", "paper_row": None},
            {"name": "c", "label": "C", "paper_row": "Mel256->EC (Base)"}]
    scores = {n: {"wer_greedy": w, "wer_lm": w / 2, "cer_greedy": w / 3} for n, w in zip("abc", (0.5, 0.25, 0.125))}
    table = build_table2(spec, scores, {"a": 1.234, "b": 2.0, "c": 3.0})
    assert table.label.tolist()[:4] == ["A", "paper: Mel256->EC (Base)", "B", "C"]  # the paper row shown once
    assert table.loc[0, ["wer_no_lm", "wer_with_lm", "cer_no_lm", "params_m"]].tolist() == [50.0, 25.0, 16.67, 1.23]
    assert table.loc[1, ["wer_no_lm", "wer_with_lm"]].tolist() == [15.53, 10.42]
    paper = paper_table2()
    assert len(table) == 3 + len(paper)  # every paper row, each once
    assert table[table.source == "paper"].label.str.removeprefix("paper: ").tolist().count("HuBERT Large") == 1
    md = to_markdown(table, "LibriSpeech test-clean")
    assert "| A | 50.00 | 25.00 | 16.67 | 1.23 |" in md and "| *paper: Mel256->EC (Base)* | 15.53 | 10.42 |  | 86.6 |" in md


def test_an_unknown_paper_row_is_named():
    with pytest.raises(ValueError, match=r"\['Mel256->EC \(Huge\)'\] is not a row"):
        build_table2([{"name": "a", "label": "A", "paper_row": "Mel256->EC (Huge)"}], {}, {})


def test_without_models_of_ours_the_table_holds_the_papers_rows(tmp_path):
    from encodecmae.report.table2 import make_table2

    table = make_table2([], [], [], tmp_path / "t.csv", tmp_path / "t.md")
    assert (table.source == "paper").all() and len(table) == len(paper_table2())
    assert "No model of ours is evaluated" in (tmp_path / "t.md").read_text()


def test_the_note_describes_the_downstream_the_scores_were_trained_with(tmp_path):
    import json

    from encodecmae.report.table2 import describe_downstream, make_table2

    settings = {"lstm_layers": 1, "hidden": 128, "proj": 64, "steps": 300, "batch_size": 32, "lr": 0.003}
    assert describe_downstream(settings) == ("a 1-layer BiLSTM-CTC (128 units per direction, projection 64; 300 steps "
                                             "of 32 utterances, Adam 0.003)")
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        files.append(tmp_path / name / "scores.json")
        files[-1].write_text(json.dumps({"wer_greedy": 0.1, "wer_lm": 0.05, "cer_greedy": 0.02,
                                         "downstream": settings}))
    spec = [{"name": n, "label": n.upper(), "paper_row": None} for n in ("a", "b")]
    make_table2(spec, files, [], tmp_path / "t.csv", tmp_path / "t.md", "the demo's test speech")
    md = (tmp_path / "t.md").read_text()
    assert "on the demo's test speech" in md and "of a 1-layer BiLSTM-CTC (128 units" in md
