"""The text side of SUPERB ASR: a LibriSpeech-layout split's utterances and the CTC alphabet."""

from __future__ import annotations

from pathlib import Path


def read_split(split_dir: str | Path) -> list[tuple[str, Path, str]]:
    """(utt_id, audio path, transcript) of every utterance below ``split_dir``, sorted by utt_id.

    Transcripts are read from every ``*.trans.txt`` below it (LibriSpeech: ``SPEAKER/CHAPTER/
    SPEAKER-CHAPTER.trans.txt``, lines ``UTTID WORD WORD ...``); the audio is ``UTTID.flac`` next to
    the transcript file. Raises FileNotFoundError for a missing folder, a folder without
    transcripts, or a transcript line without its audio (naming both), and ValueError for an
    utterance listed twice.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: split folder not found")
    found: dict[str, tuple[Path, str]] = {}
    trans_files = sorted(split_dir.rglob("*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"{split_dir}: no *.trans.txt transcript file below it (LibriSpeech layout "
                                f"SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt expected)")
    for trans in trans_files:
        for n, line in enumerate(trans.read_text().splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utt}.flac"
            if not audio.exists():
                raise FileNotFoundError(f"{trans}:{n}: utterance {utt} has no audio {audio}")
            if utt in found:
                raise ValueError(f"{trans}:{n}: utterance {utt} is listed twice")
            found[utt] = (audio, " ".join(text.split()))
    return [(utt, path, text) for utt, (path, text) in sorted(found.items())]


# CTC blank first (id 0), then the word boundary "|" (flashlight's letter-lexicon convention,
# the beam search's silence token), the apostrophe and the 26 letters: LibriSpeech's alphabet.
BLANK = 0
SIL = "|"
VOCAB: tuple[str, ...] = ("<blank>", SIL, "'", *(chr(c) for c in range(ord("A"), ord("Z") + 1)))
_CHAR_ID = {c: i for i, c in enumerate(VOCAB) if i != BLANK}


def encode(text: str) -> list[int]:
    """Transcript -> CTC ids: each word followed by ``|`` (runs of spaces count as one), as
    s3prl's targets ("A B" -> "A|B|"): the last word ends with the word boundary too, which the
    lexicon beam search needs to complete it (lexicon spellings end with ``|``). Raises
    ValueError naming the characters outside the alphabet (upper-case letters and ')."""
    text = " ".join(text.split()).replace(" ", SIL) + SIL
    unknown = sorted({c for c in text if c not in _CHAR_ID})
    if unknown:
        raise ValueError(f"{text.replace(SIL, ' ')!r}: characters outside the ASR alphabet: "
                         f"{', '.join(repr(c) for c in unknown)} (expected A-Z, ' and spaces)")
    return [_CHAR_ID[c] for c in text]


def decode(ids) -> str:
    """CTC ids -> text: ``|`` becomes a space (runs collapsed, ends stripped), blanks are
    dropped. Repeats are kept: collapsing them is the CTC decoder's job (:func:`greedy_decode`)."""
    chars = []
    for i in ids:
        i = int(i)
        if not 0 <= i < len(VOCAB):
            raise ValueError(f"id {i} is outside the vocabulary (0..{len(VOCAB) - 1})")
        if i != BLANK:
            chars.append(" " if VOCAB[i] == SIL else VOCAB[i])
    return " ".join("".join(chars).split())

