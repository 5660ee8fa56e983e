"""The command lines of the SUPERB ASR evaluation: extract-asr-features, train-asr, decode-asr."""

from __future__ import annotations

import argparse
import sys

from encodecmae.evaluation.asr.downstream import TIME_WARPS, SpecAugmentConfig
from encodecmae.evaluation.asr.features import BLOCK_SECONDS, extract_features
from encodecmae.evaluation.asr.layers import DEFAULT_LAYER_MIX, LAYER_MIXES
from encodecmae.evaluation.asr.scoring import decode_asr
from encodecmae.evaluation.asr.training import DEFAULT_BATCH_SIZE, train_asr

_INPUT_ERRORS = (FileNotFoundError, FileExistsError, ValueError, OSError)


def cmd_extract_asr_features(args: argparse.Namespace) -> None:
    try:
        extract_features(args.checkpoint, args.split_dir, args.out, device=args.device, threads=args.threads,
                         block_seconds=args.block_seconds, layer_mix=args.layer_mix)
    except _INPUT_ERRORS as exc:
        sys.exit(f"extract-asr-features: {exc}")


def cmd_train_asr(args: argparse.Namespace) -> None:
    try:
        train_asr(args.train, args.dev, args.out, args.ckpt_dir, steps=args.steps, batch_size=args.batch_size,
                  lr=args.lr, eval_every=args.eval_every, seed=args.seed, device=args.device, threads=args.threads,
                  proj=args.proj, hidden=args.hidden, lstm_layers=args.lstm_layers, resume=args.resume,
                  stop_after=args.stop_after,
                  metrics=args.metrics, workers=args.workers,
                  specaug=SpecAugmentConfig(time_mask_width=(0, args.time_mask_width),
                                            freq_mask_width=(0, args.freq_mask_width), time_warp=args.time_warp))
    except _INPUT_ERRORS as exc:
        sys.exit(f"train-asr: {exc}")


def cmd_decode_asr(args: argparse.Namespace) -> None:
    try:
        decode_asr(args.model, args.features, args.lm, args.lexicon, args.out, beam=args.beam,
                   beam_threshold=args.beam_threshold, lm_weight=args.lm_weight, word_score=args.word_score,
                   device=args.device)
    except _INPUT_ERRORS as exc:
        sys.exit(f"decode-asr: {exc}")


def register(sub) -> None:
    p = sub.add_parser("extract-asr-features",
                       help="every encoder layer's features (37.5 Hz, float16) of a LibriSpeech-layout split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split-dir", required=True, help="folder with SPEAKER/CHAPTER/*.trans.txt and UTTID.flac below it")
    p.add_argument("--out", required=True, help="features folder (feats-NNNNNN.npy, index.tsv, meta.json)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--block-seconds", type=float, default=BLOCK_SECONDS,
                   help="audio per block (memory and resume granularity; default: %(default)s)")
    p.add_argument("--layer-mix", choices=LAYER_MIXES, default=DEFAULT_LAYER_MIX,
                   help="the states written (and mixed): all - the L + 1 hidden states with the encoder's input; "
                        "released - the L block outputs, the last one the encoder output, as the authors' code "
                        "(default: %(default)s)")
    p.set_defaults(func=cmd_extract_asr_features)

    p = sub.add_parser("train-asr", help="train the SUPERB ASR downstream (BiLSTM + CTC) on ASR features")
    p.add_argument("--train", required=True, help="features folder of the training split")
    p.add_argument("--dev", required=True, help="features folder of the dev split (model selection)")
    p.add_argument("--out", required=True, help="the best-dev model")
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="utterances per step (s3prl's -d asr in effect: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--proj", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--lstm-layers", type=int, default=2, help="bidirectional LSTM layers (SUPERB: 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--workers", type=int, default=2, help="batch-loading processes (results do not depend on it)")
    p.add_argument("--time-mask-width", type=int, default=40,
                   help="SpecAugment time masks are 0 to this many frames minus one wide (SUPERB: 40)")
    p.add_argument("--freq-mask-width", type=int, default=50,
                   help="SpecAugment frequency masks are 0 to this many channels minus one wide (SUPERB: 50, for "
                        "768-1024 channels; scale it down for a narrow encoder)")
    p.add_argument("--time-warp", choices=TIME_WARPS, default="linear",
                   help="SpecAugment's time-warp interpolation (s3prl's, ESPnet's: bicubic; default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --ckpt-dir")
    p.add_argument("--stop-after", type=float, default=0.0, metavar="SECONDS",
                   help="checkpoint and exit 75 after this long (0: never)")
    p.add_argument("--metrics", required=True, metavar="CSV", help="step, loss, dev_wer rows")
    p.set_defaults(func=cmd_train_asr)

    p = sub.add_parser("decode-asr", help="greedy and 4-gram LM beam-search decoding of ASR features: WER/CER JSON")
    p.add_argument("--model", required=True, help="model written by train-asr")
    p.add_argument("--features", required=True, help="features folder of the test split")
    p.add_argument("--lm", required=True, help="ARPA (plain or .gz) or KenLM binary language model")
    p.add_argument("--lexicon", required=True, help="letter lexicon (WORD<TAB>W O R D |)")
    p.add_argument("--out", required=True, help="scores JSON (hypotheses: X.hyp.tsv next to it)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--beam-threshold", type=float, default=25.0)
    p.add_argument("--lm-weight", type=float, default=2.0)
    p.add_argument("--word-score", type=float, default=-1.0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_decode_asr)
