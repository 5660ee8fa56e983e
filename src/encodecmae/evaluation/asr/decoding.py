"""Decoding and scoring: greedy CTC decoding, the lexicon beam search under an n-gram LM (the
protocol's "w/ LM"), and WER / CER.

Case: transcripts and the CTC alphabet are upper case; lexicon spellings are upper-cased; a
lexicon word is looked up in the LM in the LM's own case (read off its unigrams), and decoded
words are upper-cased for scoring.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encodecmae.evaluation.asr.text import _CHAR_ID, BLANK, SIL, VOCAB, decode


def greedy_ids(ids) -> list[int]:
    """Best-path CTC collapse: merge repeats, then drop blanks."""
    out, prev = [], None
    for i in ids:
        i = int(i)
        if i != prev and i != BLANK:
            out.append(i)
        prev = i
    return out


def greedy_decode(log_probs: torch.Tensor | np.ndarray, lengths=None) -> list[str] | str:
    """Argmax, collapse repeats, drop blanks. [T, V] -> text; [B, T, V] (+ lengths [B]) -> texts."""
    lp = torch.as_tensor(log_probs)
    if lp.dim() == 2:
        return decode(greedy_ids(lp.argmax(-1).tolist()))
    best = lp.argmax(-1)  # [B, T]
    n = [lp.shape[1]] * lp.shape[0] if lengths is None else [int(x) for x in lengths]
    return [decode(greedy_ids(best[b, : n[b]].tolist())) for b in range(lp.shape[0])]


def _check_refs(refs: list[str], hyps: list[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs or any(not r.strip() for r in refs):
        raise ValueError("references must be non-empty")


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate over the corpus (total edits / total reference words), jiwer's."""
    import jiwer

    _check_refs(refs, hyps)
    return float(jiwer.wer(list(refs), list(hyps)))


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate over the corpus (spaces count as characters), jiwer's."""
    import jiwer

    _check_refs(refs, hyps)
    return float(jiwer.cer(list(refs), list(hyps)))


def _open_text(path: Path):
    return gzip.open(path, "rt", errors="replace") if path.suffix == ".gz" else open(path, errors="replace")


def arpa_case(path: str | Path) -> str | None:
    """``upper`` or ``lower``: the case of most cased unigrams of an ARPA file (plain or .gz; only
    the unigram section is read). None when undecided or not an ARPA file (a KenLM binary)."""
    path = Path(path)
    upper = lower = 0
    try:
        with _open_text(path) as f:
            in_unigrams = False
            for line in f:
                s = line.strip()
                if s == "\\1-grams:":
                    in_unigrams = True
                    continue
                if in_unigrams:
                    if s.startswith("\\"):
                        break
                    parts = s.split()
                    if len(parts) >= 2 and not parts[1].startswith("<"):
                        upper += parts[1].isupper()
                        lower += parts[1].islower()
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    if upper == lower:
        return None
    return "upper" if upper > lower else "lower"


def read_lexicon(path: str | Path) -> dict[str, list[list[str]]]:
    """Word -> spellings of a fairseq / flashlight letter lexicon (``WORD\\tw o r d |`` per
    line). Spellings are upper-cased (the CTC alphabet's case) and end with ``|``; unknown
    characters are an error naming the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: lexicon not found")
    lex: dict[str, list[list[str]]] = {}
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            word, spelling = parts[0], [t.upper() for t in parts[1:]]
            if not spelling:
                raise ValueError(f"{path}:{n}: word {word!r} has no spelling")
            if spelling[-1] != SIL:  # flashlight's convention: a word ends at the silence token
                spelling.append(SIL)
            bad = [t for t in spelling if t not in _CHAR_ID]
            if bad:
                raise ValueError(f"{path}:{n}: spelling of {word!r} has tokens outside the ASR alphabet: {bad}")
            lex.setdefault(word, [])
            if spelling not in lex[word]:
                lex[word].append(spelling)
    if not lex:
        raise ValueError(f"{path}: empty lexicon")
    return lex


@dataclass(frozen=True)
class BeamSettings:
    """The protocol's lexicon beam search (s3prl's SUPERB ASR decoding)."""

    beam: int = 5
    beam_threshold: float = 25.0
    lm_weight: float = 2.0
    word_score: float = -1.0
    unk_score: float = -math.inf
    sil_score: float = 0.0


class LexiconBeamSearch:
    """flashlight-text's ``LexiconDecoder`` with a ``KenLM`` ARPA (plain or .gz) or binary LM and
    a letter lexicon, built as fairseq's ``W2lKenLMDecoder`` (which s3prl uses): a trie of the
    lexicon's spellings, each word scored by its LM unigram and smeared by max; the silence
    token ``|``; log-softmax emissions.

    Lexicon words are looked up in the LM in the LM's case (:func:`arpa_case`); the decoded words
    are returned upper case, as LibriSpeech's transcripts.
    """

    def __init__(self, lm: str | Path, lexicon: str | Path, settings: BeamSettings = BeamSettings()):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        lm = Path(lm)
        if not lm.exists():
            raise FileNotFoundError(f"{lm}: language model not found")
        lex = read_lexicon(lexicon)
        case = arpa_case(lm)
        convert = str.upper if case == "upper" else str.lower if case == "lower" else (lambda w: w)
        words: dict[str, list[list[str]]] = {}
        for w, spellings in lex.items():  # merge words that differ only in case
            for s in spellings:
                if s not in words.setdefault(convert(w), []):
                    words[convert(w)].append(s)
        self.word_dict = Dictionary()
        for w in ("<s>", "</s>", "<unk>", *words):
            if not self.word_dict.contains(w):
                self.word_dict.add_entry(w)
        self.unk = self.word_dict.get_index("<unk>")
        self.word_dict.set_default_index(self.unk)
        self.lm = self._load_kenlm(KenLM, lm)
        sil = _CHAR_ID[SIL]
        self.trie = Trie(len(VOCAB), sil)
        start = self.lm.start(False)
        for w, spellings in words.items():
            idx = self.word_dict.get_index(w)
            _, score = self.lm.score(start, idx)
            for s in spellings:
                self.trie.insert([_CHAR_ID[t] for t in s], idx, score)
        self.trie.smear(SmearingMode.MAX)
        self.settings = settings
        opts = LexiconDecoderOptions(beam_size=settings.beam, beam_size_token=len(VOCAB),
                                     beam_threshold=settings.beam_threshold, lm_weight=settings.lm_weight,
                                     word_score=settings.word_score, unk_score=settings.unk_score,
                                     sil_score=settings.sil_score, log_add=False, criterion_type=CriterionType.CTC)
        self.decoder = LexiconDecoder(opts, self.trie, self.lm, sil, BLANK, self.unk, [], False)

    def _load_kenlm(self, KenLM, path: Path):
        try:
            return KenLM(str(path), self.word_dict)
        except Exception as exc:
            if path.suffix != ".gz":
                raise ValueError(f"{path}: KenLM cannot read the language model ({exc})") from exc
        # a KenLM built without zlib cannot read .gz: decompress to a temporary file
        with tempfile.NamedTemporaryFile(suffix=".arpa", delete=False) as tmp, gzip.open(path, "rb") as src:
            shutil.copyfileobj(src, tmp)
        try:
            return KenLM(tmp.name, self.word_dict)
        except Exception as exc:
            raise ValueError(f"{path}: KenLM cannot read the language model ({exc})") from exc
        finally:
            os.unlink(tmp.name)

    def __call__(self, log_probs: np.ndarray | torch.Tensor) -> str:
        """log_probs [T, V] (log-softmax) -> the best hypothesis' words, upper case."""
        em = np.ascontiguousarray(torch.as_tensor(log_probs).float().cpu().numpy(), dtype=np.float32)
        T, V = em.shape
        results = self.decoder.decode(em.ctypes.data, T, V)
        if not results:
            return ""
        return " ".join(self.word_dict.get_entry(i).upper() for i in results[0].words if i >= 0)

