"""Decoding a test split: greedy and LM beam-search transcripts of a features folder, scored."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from encodecmae.device import resolve_device
from encodecmae.evaluation.asr.decoding import (
    BeamSettings,
    LexiconBeamSearch,
    cer,
    greedy_decode,
    wer,
)
from encodecmae.evaluation.asr.features import AsrFeatures
from encodecmae.evaluation.asr.training import load_downstream, predict
from encodecmae.progress import Progress


def hypotheses_path(out_json: str | Path) -> Path:
    """The per-utterance hypotheses next to the scores: ``X.json`` -> ``X.hyp.tsv``."""
    out_json = Path(out_json)
    return out_json.with_name(out_json.stem + ".hyp.tsv")


# the training settings a scores file repeats (Table 2 describes the downstream from them)
DOWNSTREAM_KEYS = ("lstm_layers", "hidden", "proj", "steps", "batch_size", "lr")


def decode_asr(model: str | Path, test_dir: str | Path, lm: str | Path | None, lexicon: str | Path | None,
               out_json: str | Path, beam: int = 5, beam_threshold: float = 25.0, lm_weight: float = 2.0,
               word_score: float = -1.0, unk_score: float = -math.inf, sil_score: float = 0.0, device: str = "cpu",
               batch_size: int = 32) -> dict:
    """Greedy and LM beam-search decoding of a features folder; scores to ``out_json``.

    The JSON holds wer_greedy, wer_lm, cer_greedy, cer_lm (fractions, not percents),
    n_utterances, cer_all_blank (the CER of an empty hypothesis for every utterance: 1.0 by
    definition, a reference point), the beam settings, the downstream's training settings
    (``DOWNSTREAM_KEYS``) and the inputs. Per utterance, TSV
    ``utt_id, reference, greedy, lm`` at :func:`hypotheses_path`. Without ``lm`` and ``lexicon``
    the LM columns are null.
    """
    dev = resolve_device(device)
    data = AsrFeatures(test_dir)
    net, payload = load_downstream(model, dev)
    if (data.n_layers, data.dim) != (net.settings["n_layers"], net.settings["dim"]):
        raise ValueError(f"{test_dir}: features of {data.n_layers} layers x {data.dim}, but {model} was trained on "
                         f"{net.settings['n_layers']} x {net.settings['dim']}")
    settings = BeamSettings(beam, beam_threshold, lm_weight, word_score, unk_score, sil_score)
    if (lm is None) != (lexicon is None):
        raise ValueError("give both --lm and --lexicon, or neither")
    search = LexiconBeamSearch(lm, lexicon, settings) if lm is not None else None
    greedy, with_lm = [""] * len(data), [""] * len(data)
    bar = Progress(f"decode {Path(test_dir).name}", total=len(data), unit="utt")
    for i, lp in predict(net, data, dev, batch_size):
        greedy[i] = greedy_decode(lp)
        if search is not None:
            with_lm[i] = search(lp)
        bar.update(1)
    bar.close()
    refs = data.transcripts
    scores = {
        "wer_greedy": wer(refs, greedy), "cer_greedy": cer(refs, greedy),
        "wer_lm": wer(refs, with_lm) if search else None, "cer_lm": cer(refs, with_lm) if search else None,
        "n_utterances": len(data), "cer_all_blank": cer(refs, [""] * len(refs)),
        "settings": {**asdict(settings), "unk_score": str(settings.unk_score)},
        "model": str(model), "model_step": payload.get("step"), "model_dev_wer": payload.get("dev_wer"),
        "downstream": {k: payload.get("config", {}).get(k) for k in DOWNSTREAM_KEYS},
        "features": str(test_dir), "lm": None if lm is None else str(lm),
        "lexicon": None if lexicon is None else str(lexicon),
    }
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tsv = hypotheses_path(out_json)
    with open(tsv, "w") as f:
        f.write("utt_id\treference\tgreedy\tlm\n")
        f.writelines(f"{u}\t{r}\t{g}\t{h}\n" for u, r, g, h in zip(data.utt_ids, refs, greedy, with_lm))
    out_json.write_text(json.dumps(scores, indent=1) + "\n")
    print(f"wrote {out_json} and {tsv}: WER {100 * scores['wer_greedy']:.2f} % greedy"
          + (f", {100 * scores['wer_lm']:.2f} % with the LM" if search else ""), flush=True)
    return scores

