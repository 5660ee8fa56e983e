"""The SUPERB ASR downstream evaluation (the paper's Table 2).

The protocol (s3prl's ``downstream/asr``, see superb_asr_protocol.md): the frozen upstream's
hidden states of every layer are mixed by a learned softmax-weighted sum, projected to 1024
dimensions and fed to 2 bidirectional LSTM layers of 1024 units and a linear CTC output layer
over characters, trained on LibriSpeech train-clean-100 with Adam (lr 1e-4, 16 utterances per
step as s3prl trains in effect, 200k steps, gradient clipping 1.0) and SpecAugment on the mixed
representation; the model of the best dev-clean WER (every 2000 steps) is decoded on test-clean
greedily ("w/o LM") and with a lexicon beam search and the official 4-gram LM ("w/ LM").

The pieces, one module each, in the order a run uses them:

* :mod:`.text`: :func:`read_split` (the utterances of a LibriSpeech-layout split) and
  :func:`encode` / :func:`decode` (characters <-> CTC ids, :data:`VOCAB`).
* :mod:`.layers`: which states are mixed (``layer_mix``: ``all`` or ``released``) and
  :func:`layer_features`, at half the frame rate (the paper averages pairs of frames: 75 ->
  37.5 Hz).
* :mod:`.features`: :func:`extract_features` writes them to disk once per split as float16,
  block by block and resumable; :class:`AsrFeatures` reads them back lazily.
* :mod:`.downstream`: :class:`AsrDownstream` (with :class:`SpecAugment`) and :func:`ctc_loss`.
* :mod:`.decoding`: :func:`greedy_decode`, :class:`LexiconBeamSearch`, :func:`wer` / :func:`cer`.
* :mod:`.training`: :func:`train_asr`, resumable to the bit.
* :mod:`.scoring`: :func:`decode_asr`, a test split decoded and scored.
* :mod:`.commands`: the command lines (``extract-asr-features``, ``train-asr``, ``decode-asr``).

Every name below is importable from ``encodecmae.evaluation.asr`` itself.
"""

from encodecmae.evaluation.asr.commands import (
    cmd_decode_asr,
    cmd_extract_asr_features,
    cmd_train_asr,
    register,
)
from encodecmae.evaluation.asr.decoding import (
    BeamSettings,
    LexiconBeamSearch,
    arpa_case,
    cer,
    greedy_decode,
    greedy_ids,
    read_lexicon,
    wer,
)
from encodecmae.evaluation.asr.downstream import (
    TIME_WARPS,
    AsrDownstream,
    BiLSTM,
    SpecAugment,
    SpecAugmentConfig,
    ctc_loss,
    reverse_within,
)
from encodecmae.evaluation.asr.features import (
    BLOCK_SECONDS,
    FEATURES_FORMAT,
    FEATURES_VERSION,
    INDEX_COLUMNS,
    AsrFeatures,
    collate,
    extract_features,
    feature_file,
    write_feature_dir,
)
from encodecmae.evaluation.asr.layers import (
    ASR_FRAME_RATE,
    CHUNK_BATCH,
    DEFAULT_LAYER_MIX,
    LAYER_MIXES,
    average_pairs,
    hidden_states,
    layer_features,
    layer_features_batch,
    layer_names,
)
from encodecmae.evaluation.asr.scoring import (
    DOWNSTREAM_KEYS,
    decode_asr,
    hypotheses_path,
)
from encodecmae.evaluation.asr.text import BLANK, SIL, VOCAB, decode, encode, read_split
from encodecmae.evaluation.asr.training import (
    DEFAULT_BATCH_SIZE,
    KEEP_CHECKPOINTS,
    LOG_EVERY,
    RESUME_MAY_CHANGE,
    MetricsCsv,
    StepBatches,
    batch_indices,
    evaluate_greedy,
    load_downstream,
    predict,
    step_seed,
    train_asr,
)

__all__ = [
    "cmd_decode_asr", "cmd_extract_asr_features", "cmd_train_asr", "register", "BeamSettings",
    "LexiconBeamSearch", "arpa_case", "cer", "greedy_decode", "greedy_ids", "read_lexicon", "wer",
    "TIME_WARPS", "AsrDownstream", "BiLSTM", "SpecAugment", "SpecAugmentConfig", "ctc_loss", "reverse_within",
    "BLOCK_SECONDS", "FEATURES_FORMAT", "FEATURES_VERSION", "INDEX_COLUMNS", "AsrFeatures", "collate",
    "extract_features", "feature_file", "write_feature_dir", "ASR_FRAME_RATE", "CHUNK_BATCH",
    "DEFAULT_LAYER_MIX", "LAYER_MIXES", "average_pairs", "hidden_states", "layer_features",
    "layer_features_batch", "layer_names", "DOWNSTREAM_KEYS", "decode_asr", "hypotheses_path", "BLANK", "SIL",
    "VOCAB", "decode", "encode", "read_split", "DEFAULT_BATCH_SIZE", "KEEP_CHECKPOINTS", "LOG_EVERY",
    "RESUME_MAY_CHANGE", "MetricsCsv", "StepBatches", "batch_indices", "evaluate_greedy", "load_downstream",
    "predict", "step_seed", "train_asr",
]
