"""The demo's speech-recognition set (the paper's Table 2, SUPERB ASR) and ``make-demo-asr``.

It stands in for LibriSpeech (train-clean-100 / dev-clean / test-clean), its 4-gram LM and its
letter lexicon, synthesised with numpy from a seed like the rest of the demo. It must be
learnable in minutes of CPU by a small BiLSTM-CTC on frozen features of small demo encoders, and
a language model must help, so:

* the words are made up and spelled with 13 letters, each the name of one phone of the formant
  synthesiser (``speech._speak``): a character CTC learns a letter -> sound map with no English
  spelling irregularities to memorise;
* the sentences come from a small grammar (``sample_sentence``) over 26 words in word classes,
  with a verb choosing its object's class, so the word sequence is predictable: an n-gram LM
  built from the training transcripts (``build_ngram_lm``) separates grammatical from
  ungrammatical hypotheses of a lexicon beam search.

``make_demo_asr(out_dir, seed, minutes)`` writes, LibriSpeech's layout::

    out_dir/{train,dev,test}/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac   24 kHz mono
    out_dir/{train,dev,test}/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt       UTTID WORD ...
    out_dir/lm.arpa        Witten-Bell n-gram LM (ARPA, upper case) of the train transcripts
    out_dir/lexicon.lst    letter lexicon as fairseq/flashlight read it: WORD<TAB>W O R D |
    out_dir/README.txt

The splits have disjoint speakers (as LibriSpeech's do: the test measures generalisation to new
voices) and take 80/10/10 % of ``minutes``, but at least ``MIN_UTTERANCES`` utterances each, and
the train split has every word of the vocabulary at least once. Utterances last about 2.4 s, so
the default 4 minutes give 80 train utterances (3.2 min) and 20 each for dev and test (~0.9 min).
Utterance ``k`` of a split draws from its own generator seeded from ``(seed, split, k)``, so one
seed gives byte-identical files, and a longer set starts with the utterances of a shorter one.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from encodecmae.demo.dsp import _add, _db, _mix_snr, _peaknorm, _pick, _random_eq, _rng
from encodecmae.demo.environment import _background
from encodecmae.demo.files import _AtomicDir, _write_audio
from encodecmae.demo.speech import _CONSONANTS, _VOWELS, _speak, _speaker

ASR_SAMPLE_RATE = 24_000  # EnCodec's rate: the features are computed without resampling
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}
MIN_UTTERANCES = 20  # per split: a dev/test WER over fewer sentences is mostly noise
SPEAKERS_PER_SPLIT = {"train": 12, "dev": 4, "test": 4}  # disjoint across splits
DEFAULT_LM_ORDER = 3

# Letter -> phone of speech._VOWELS / speech._CONSONANTS. Five vowels far apart in the F1/F2
# plane (i/E/a/O/u: the corners and edges of the vowel triangle; e, o, I, U sit too close to
# them) and consonants of four distinct kinds: nasals (m n), a liquid (l; r is dropped, its
# formants are close to l's), fricatives with different noise bands (s 4.5-7.5 kHz, f broadband
# and weak) and stops with different bursts (t high, k mid, d voiced). One letter is one phone,
# so a word's spelling is its pronunciation.
LETTER_PHONES = {
    "A": "a", "E": "E", "I": "i", "O": "O", "U": "u",
    "M": "m", "N": "n", "L": "l", "S": "s", "F": "f", "K": "k", "T": "t", "D": "d",
}

# The grammar's word classes. Words are CV(CV) syllables (open syllables: every consonant is
# followed by a vowel, whose formants the synthesiser gives the consonant), no letter twice in a
# row (CTC would need a blank between them), no two words spelled alike.
NAMES = ("MAMA", "NILO", "TOMI", "SALU", "DENA", "KOFI")
TIMES = ("TEMI", "NODA")  # "today", "tomorrow": open a sentence
CONJUNCTION = "ENI"  # "and": joins two names or two objects of one class
ANIMALS = ("NASE", "LUNO", "KIDA", "FOSI")
FOODS = ("MELU", "TAKO", "SUNE", "DOLI")
PLACES = ("KALI", "DOME", "NUSA", "TEFA")  # close a sentence
# verb -> the class of its object: a verb predicts its object's class (what makes a bigram help)
VERBS = {"SEMO": ANIMALS, "LIKA": ANIMALS, "DUNI": FOODS, "FALE": FOODS, "TUKO": ANIMALS + FOODS}
VOCABULARY = tuple(sorted(set(NAMES + TIMES + (CONJUNCTION,) + ANIMALS + FOODS + PLACES + tuple(VERBS))))

# sentence templates (3-5 words) and their probabilities
TEMPLATES = (
    (("NAME", "VERB", "OBJ"), 0.30),
    (("NAME", "VERB", "OBJ", "PLACE"), 0.25),
    (("TIME", "NAME", "VERB", "OBJ"), 0.15),
    (("NAME", "AND", "NAME", "VERB", "OBJ"), 0.15),
    (("NAME", "VERB", "OBJ", "AND", "OBJ"), 0.15),
)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def spell(word: str) -> list[str]:
    """The phones of ``word`` (one per letter)."""
    return [LETTER_PHONES[c] for c in word]


def sample_sentence(rng: np.random.Generator) -> list[str]:
    """A random sentence of the grammar (a list of upper-case words)."""
    probs = np.array([p for _, p in TEMPLATES])
    template = TEMPLATES[int(rng.choice(len(TEMPLATES), p=probs / probs.sum()))][0]
    words: list[str] = []
    objects: tuple[str, ...] = ()
    for slot in template:
        if slot == "NAME":
            # "MAMA ENI MAMA" is not a sentence: the second name differs from the first
            words.append(_pick(rng, tuple(n for n in NAMES if n not in words)))
        elif slot == "TIME":
            words.append(_pick(rng, TIMES))
        elif slot == "AND":
            words.append(CONJUNCTION)
        elif slot == "VERB":
            verb = _pick(rng, tuple(sorted(VERBS)))
            words.append(verb)
            objects = VERBS[verb]
        elif slot == "OBJ":
            if words[-1] == CONJUNCTION:  # the second object: same class as the first, another one
                first = words[-2]
                objects = ANIMALS if first in ANIMALS else FOODS
                words.append(_pick(rng, tuple(o for o in objects if o != first)))
            else:
                words.append(_pick(rng, objects))
        else:  # PLACE
            words.append(_pick(rng, PLACES))
    return words


# ------------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------------


def _sentence_audio(rng: np.random.Generator, sr: int, words: list[str], voice: dict) -> np.ndarray:
    """One sentence spoken by ``voice``: one synthesis call (one pitch contour, declination over the
    sentence), a short pause ("_", 60-200 ms) between words, silence around, room and noise."""
    v = dict(voice, rate=voice["rate"] * rng.uniform(0.9, 1.1), shift=rng.normal(0.0, 1.0))
    phones: list[str] = []
    for i, w in enumerate(words):
        if i:
            phones.append("_")
        phones += spell(w)
    x = _speak(rng, sr, phones, v)
    lead, trail = (int(rng.uniform(0.1, 0.3) * sr) for _ in range(2))
    out = np.zeros(lead + len(x) + trail)
    _add(out, x, lead)
    out = _random_eq(rng, out, sr, 0.5)
    # mild noise (LibriSpeech "clean" is read speech with little noise): 20-40 dB SNR
    out = _mix_snr(out, _background(rng, sr, len(out)), rng.uniform(20.0, 40.0))
    return _peaknorm(out, _db(rng.uniform(-12.0, -3.0)))


def _speaker_ids(split: str) -> list[int]:
    """LibriSpeech-like numeric speaker ids: train 101.., dev 201.., test 301.. (disjoint)."""
    base = 100 * (SPLITS.index(split) + 1)
    return [base + i + 1 for i in range(SPEAKERS_PER_SPLIT[split])]


def _chapter_id(speaker: int) -> int:
    return 10 * speaker  # one chapter per speaker


def _write_split(tmp: Path, split: str, seed: int, seconds: float) -> tuple[list[list[str]], float]:
    """Utterances of ``split`` until they last ``seconds`` (and at least MIN_UTTERANCES).

    Returns the transcripts (in utterance order) and the duration written (s).
    """
    sr = ASR_SAMPLE_RATE
    speakers = _speaker_ids(split)
    voices = [_speaker(_rng(seed, "asr", split, "speaker", i)) for i in range(len(speakers))]
    trans: dict[tuple[int, int], list[str]] = defaultdict(list)
    sentences: list[list[str]] = []
    total = 0.0
    k = 0
    # the train split must have every word once: the lexicon and the LM are built from its
    # transcripts, and a word missing there could never be decoded in dev/test. Its first
    # sentences are drawn until one brings a word not yet seen (about a dozen sentences cover the
    # vocabulary; rare words, e.g. the places, would take ~50 sentences by chance), and it goes on
    # until every word is in.
    unseen = set(VOCABULARY) if split == "train" else set()
    while total < seconds or k < MIN_UTTERANCES or unseen:
        rng = _rng(seed, "asr", split, k)
        spk_i = k % len(speakers)  # dealt round-robin: every speaker reads about as much
        spk = speakers[spk_i]
        chapter = _chapter_id(spk)
        words = sample_sentence(rng)
        for _ in range(100):
            if not unseen or unseen.intersection(words):
                break
            words = sample_sentence(rng)
        x = _sentence_audio(rng, sr, words, voices[spk_i])
        utt = f"{spk}-{chapter}-{k // len(speakers):04d}"
        _write_audio(tmp / split / str(spk) / str(chapter) / f"{utt}.flac", x, sr, "FLAC", "PCM_16")
        trans[(spk, chapter)].append(f"{utt} {' '.join(words)}")
        sentences.append(words)
        unseen.difference_update(words)
        total += len(x) / sr
        k += 1
    for (spk, chapter), lines in trans.items():
        (tmp / split / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return sentences, total


def read_transcripts(split_dir: str | Path) -> dict[str, list[str]]:
    """``{utterance id: words}`` from every ``*.trans.txt`` under ``split_dir`` (LibriSpeech's
    layout), sorted by id."""
    out: dict[str, list[str]] = {}
    for path in sorted(Path(split_dir).rglob("*.trans.txt")):
        for line in path.read_text().splitlines():
            if line.strip():
                utt, *words = line.split()
                out[utt] = words
    return dict(sorted(out.items()))


# ------------------------------------------------------------------------------------------------
# Language model and lexicon
# ------------------------------------------------------------------------------------------------


def _ngram_probs(sentences: list[list[str]], order: int):
    """Interpolated Witten-Bell n-gram model in backoff form.

    For a history h (k-1 words) seen c(h) times followed by T(h) distinct words,
    ``P(w|h) = (c(h,w) + T(h) P(w|h')) / (c(h) + T(h))`` where h' drops h's oldest word, and the
    unigram level interpolates with the uniform distribution over the vocabulary (the training
    words, ``</s>`` and ``<unk>``), so every word, ``<unk>`` included, has a probability. In ARPA
    form the seen n-grams store that interpolated P(w|h) and h stores the backoff weight
    ``gamma(h) = T(h) / (c(h) + T(h))``: an unseen w gets ``gamma(h) P(w|h')``, and the two parts
    sum to ``sum_w c(h,w)/(c(h)+T(h)) + gamma(h) = 1``: each conditional distribution normalises.

    Returns ``(probs, backoffs)``: ``probs[k]`` maps k-gram tuples to P(last | rest) and
    ``backoffs`` maps histories (tuples) to gamma.
    """
    counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k][(h..., w)]
    for words in sentences:
        toks = [BOS] + list(words) + [EOS]
        for i in range(1, len(toks)):  # every predicted token (not <s>)
            for k in range(1, order + 1):
                if i - k + 1 < 0:
                    break
                counts[k][tuple(toks[i - k + 1 : i + 1])] += 1
    vocab = sorted({g[0] for g in counts[1]} | {EOS, UNK})
    hist_total: Counter = Counter()
    hist_types: Counter = Counter()
    for k in range(2, order + 1):
        for g, c in counts[k].items():
            hist_total[g[:-1]] += c
            hist_types[g[:-1]] += 1
    n1 = sum(counts[1].values())
    t1 = len(counts[1])
    probs: list[dict] = [dict() for _ in range(order + 1)]
    probs[1] = {(w,): (counts[1][(w,)] + t1 / len(vocab)) / (n1 + t1) for w in vocab}
    backoffs = {h: hist_types[h] / (hist_total[h] + hist_types[h]) for h in hist_total}

    def lower(w: str, h: tuple) -> float:  # the full backed-off P(w | h)
        if not h:
            return probs[1][(w,)]
        if h + (w,) in probs[len(h) + 1]:
            return probs[len(h) + 1][h + (w,)]
        return backoffs.get(h, 1.0) * lower(w, h[1:])

    for k in range(2, order + 1):
        for g in sorted(counts[k]):
            h, w = g[:-1], g[-1]
            t, c = hist_types[h], hist_total[h]
            probs[k][g] = (counts[k][g] + t * lower(w, h[1:])) / (c + t)
    return probs, backoffs


def build_ngram_lm(transcripts: Iterable, order: int = DEFAULT_LM_ORDER, out_arpa: str | Path = "lm.arpa") -> Path:
    """Write an ``order``-gram LM of ``transcripts`` (sentences: strings or lists of words) to
    ``out_arpa`` in the ARPA format (log10 probabilities and backoff weights), smoothed by
    interpolated Witten-Bell (see ``_ngram_probs``), with ``<s>``, ``</s>`` and ``<unk>``.

    Written by hand (no external tool) so that the demo needs no KenLM ``lmplz`` binary; the
    file loads in KenLM, as the paper's official LibriSpeech 4-gram does. Returns the path.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    sentences = [s.split() if isinstance(s, str) else list(s) for s in transcripts]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("no transcripts to build a language model from")
    probs, backoffs = _ngram_probs(sentences, order)
    # <s> is never predicted: ARPA gives it a dummy log-probability (SRILM and KenLM write -99)
    # but it carries the backoff weight of the sentence start
    unigrams = sorted(probs[1].items()) + [((BOS,), None)]
    sections = [unigrams] + [sorted(probs[k].items()) for k in range(2, order + 1)]

    def line(g, p, k):
        lp = "-99" if p is None else f"{math.log10(p):.6f}"
        text = f"{lp}\t{' '.join(g)}"
        if k < order and g in backoffs:  # only histories carry a weight (none: log10 1 = 0)
            text += f"\t{math.log10(backoffs[g]):.6f}"
        return text

    out = Path(out_arpa)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["", "\\data\\"] + [f"ngram {k}={len(sec)}" for k, sec in enumerate(sections, 1)]
    for k, sec in enumerate(sections, 1):
        lines += ["", f"\\{k}-grams:"] + [line(g, p, k) for g, p in sec]
    lines += ["", "\\end\\", ""]
    out.write_text("\n".join(lines))
    return out


def write_lexicon(words: Iterable[str], out: str | Path) -> Path:
    """A letter lexicon as fairseq / flashlight read it: ``WORD<TAB>W O R D |`` per word (sorted,
    the LM's case; ``|`` is the word boundary token of the letter CTC). Returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{w}\t{' '.join(w)} |\n" for w in sorted(set(words))))
    return out


# ------------------------------------------------------------------------------------------------
# The set
# ------------------------------------------------------------------------------------------------


_README = """\
Synthetic speech-recognition set of the EnCodecMAE demo (stands in for LibriSpeech in the
SUPERB ASR evaluation, the paper's Table 2). Written by `encodecmae make-demo-asr`
(encodecmae.demo.asr) with seed {seed}; regenerate it rather than edit it.

Layout (LibriSpeech's):
  {{train,dev,test}}/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   {sr} Hz mono FLAC 16-bit
  {{train,dev,test}}/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "UTTID WORD WORD ..."
  lm.arpa       {order}-gram LM, interpolated Witten-Bell, ARPA format, from the train transcripts
  lexicon.lst   letter lexicon ("WORD<TAB>W O R D |"), the train transcripts' words

Splits (disjoint speakers):
{splits}

Speech: formant synthesis by random voices (encodecmae.demo.speech), one phone per letter
({letters}), 60-200 ms pauses between words, background noise at 20-40 dB SNR.
Sentences: a small grammar over {n_words} made-up words (3-5 words a sentence), e.g.
  NAME VERB OBJECT [PLACE] / TIME NAME VERB OBJECT / NAME ENI NAME VERB OBJECT /
  NAME VERB OBJECT ENI OBJECT, where the verb chooses the object's class (animals or foods).
Words: {words}
"""


def make_demo_asr(
    out_dir: str | Path,
    seed: int = 0,
    minutes: float = 4.0,
    lm_order: int = DEFAULT_LM_ORDER,
    overwrite: bool = False,
) -> dict:
    """Write the demo ASR set of about ``minutes`` minutes (all splits) to ``out_dir`` (atomically).

    Returns a summary: ``{"splits": {split: {"utterances", "seconds"}}, "vocabulary", "lm_order"}``.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if lm_order < 1:
        raise ValueError(f"lm_order must be >= 1, got {lm_order}")
    out_dir = Path(out_dir)
    summary: dict = {"splits": {}, "lm_order": int(lm_order)}
    with _AtomicDir(out_dir, overwrite) as tmp:
        train: list[list[str]] = []
        for split in SPLITS:
            sentences, seconds = _write_split(tmp, split, seed, SPLIT_FRACTIONS[split] * minutes * 60.0)
            summary["splits"][split] = {"utterances": len(sentences), "seconds": round(seconds, 3)}
            if split == "train":
                train = sentences
        # the LM and the lexicon see the training transcripts only, as with LibriSpeech's
        # (whose LM text excludes the dev/test books)
        build_ngram_lm(train, lm_order, tmp / "lm.arpa")
        words = sorted({w for s in train for w in s})
        write_lexicon(words, tmp / "lexicon.lst")
        summary["vocabulary"] = len(words)
        splits = "\n".join(
            f"  {s:5s} {v['utterances']:4d} utterances {v['seconds'] / 60:6.2f} min  speakers "
            f"{', '.join(map(str, _speaker_ids(s)))}"
            for s, v in summary["splits"].items()
        )
        letters = ", ".join(f"{c}={p}" for c, p in LETTER_PHONES.items())
        (tmp / "README.txt").write_text(_README.format(
            seed=seed, sr=ASR_SAMPLE_RATE, order=lm_order, splits=splits, letters=letters,
            n_words=len(VOCABULARY), words=" ".join(VOCABULARY),
        ))
    return summary


def _check_phones() -> None:
    # the letter map must name phones the synthesiser has (a KeyError in _speak otherwise)
    missing = [p for p in LETTER_PHONES.values() if p not in _VOWELS and p not in _CONSONANTS]
    assert not missing, missing
    assert all(set(w) <= set(LETTER_PHONES) for w in VOCABULARY)


_check_phones()


def cmd_make_demo_asr(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    s = make_demo_asr(args.out, seed=args.seed, minutes=args.minutes, lm_order=args.lm_order,
                      overwrite=args.overwrite)
    parts = ", ".join(f"{k} {v['utterances']} utt {v['seconds'] / 60:.2f} min" for k, v in s["splits"].items())
    print(f"{args.out}: {parts}; {s['vocabulary']} words, {s['lm_order']}-gram LM; "
          f"{time.perf_counter() - t0:.1f} s")


def register(sub) -> None:
    p = sub.add_parser(
        "make-demo-asr",
        help="synthesise the demo speech-recognition set (LibriSpeech layout, n-gram LM, lexicon)",
        description="Write a synthetic ASR set under --out (atomically): {train,dev,test}/SPK/CHAP/ "
        "(FLAC + trans.txt, LibriSpeech's layout), lm.arpa, lexicon.lst and README.txt.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist)")
    p.add_argument("--seed", type=int, default=0, help="random seed (config: asr.demo_seed; default 0)")
    p.add_argument("--minutes", type=float, default=4.0,
                   help="minutes of speech, all splits (config: asr.demo_minutes; default 4)")
    p.add_argument("--lm-order", type=int, default=DEFAULT_LM_ORDER,
                   help=f"n-gram order of the LM (default {DEFAULT_LM_ORDER})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_make_demo_asr)
