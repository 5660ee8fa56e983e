"""Every GPU measurement of issue 26 in one run, for a short GPU lease (meant to end within 8 minutes).

    python benchmarks/gpu_check.py --out results/gpu_check         # on a CUDA GPU
    python benchmarks/gpu_check.py --cpu --tiny --out /tmp/check    # CPU stand-in, tiny sizes (seconds)

It writes synthetic shards (paper-like clip lengths at 24 kHz, with the project's shard writer)
and random frame targets, then measures, through the project's own code (``training.loop``'s
setup, batches and train_step; ``tokenize_shard``; ``embed_clips``; ``train_asr``):

- ``train_base`` / ``train_large``: training clips/s at batch 128, today's step (torch's default
  AdamW, eager, no device prefetch) and the optimised one (fused AdamW, torch.compile, prefetch),
  with counted FLOPs per step and MFU against the card's peak dense bf16 rate (``PEAK_BF16``);
- ``adamw``, ``compile``, ``prefetch``: base clips/s with one speed option changed at a time;
- ``host_syncs``: host synchronisations per step (``torch.cuda.set_sync_debug_mode`` on CUDA;
  on the CPU the tensor reads that would synchronise: ``.item()``, ``nonzero``, ...);
- ``loader``: clips/s the loader delivers alone against what the optimised step consumes;
- ``tokenize``, ``embed``: EnCodec tokenisation (random weights, the 24-kHz architecture) and
  base-model embedding, in x real time;
- ``train_asr``: the SUPERB ASR downstream's training steps/s on synthetic base features;
- ``loss_curve``: up to 2,000 steps of today's and the optimised step on the same batches.

A measurement that cannot run fails fast and is named (no CUDA: an error unless ``--cpu``); one
that is left out is recorded as skipped with the reason (the time budget, a missing compiler),
never dropped. Results: ``gpu_check.json`` (machine-readable) and ``gpu_check.md`` (a table) in
``--out``. Exit status 1 when a measurement failed. docs/gpu.md says how to read them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_measure, beside this script
from gpu_measure import (MEASUREMENTS, TARGETS, Ctx, gpu_profile, measure_asr, measure_curve,  # noqa: E402
                         measure_embed, measure_loader, measure_option, measure_syncs, measure_tokenize,
                         measure_training, tiny_profile, write_corpus)


class NeedsCuda(RuntimeError):
    pass


# --- results -----------------------------------------------------------------------------------


class Results:
    """Each measurement's status (ok, failed, skipped), reason, values and the time it took."""

    def __init__(self, budget_s: float, strict: bool):
        self.t0, self.budget_s, self.strict = time.monotonic(), budget_s, strict
        self.items: dict[str, dict] = {}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def skip(self, name: str, reason: str) -> None:
        self.items[name] = {"status": "skipped", "reason": reason}
        print(f"gpu_check: {name} skipped: {reason}", flush=True)

    def run(self, name: str, needs_s: float, fn, *args) -> dict | None:
        if self.left() < needs_s:
            self.skip(name, f"time budget: {self.left():.0f} s left of {self.budget_s:.0f} s, it needs ~{needs_s} s")
            return None
        print(f"gpu_check: {name} ...", flush=True)
        t = time.monotonic()
        try:
            values = fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            self.items[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=6), "seconds": time.monotonic() - t}
            print(f"gpu_check: {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            values = None
        finally:
            if torch.cuda.is_available():  # the failed run's tensors (held by the traceback) are gone now
                gc.collect()
                torch.cuda.empty_cache()
        if values is None:
            return None
        self.items[name] = {"status": "ok", "seconds": round(time.monotonic() - t, 1), **values}
        print(f"gpu_check: {name}: {summary(name, self.items[name])}", flush=True)
        return self.items[name]


# --- the report ----------------------------------------------------------------------------------


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def summary(name: str, r: dict) -> str:
    """One line of a finished measurement (the log and the Markdown table)."""
    if name in ("train_base", "train_large"):
        t, o = r["today"], r["optimised"]
        return (f"{o['size']} batch {o['batch']}: today {t['clips_s']:.1f} clips/s (MFU {_f(t['mfu'], '{:.1%}')}), "
                f"optimised {o['clips_s']:.1f} clips/s (MFU {_f(o['mfu'], '{:.1%}')}, "
                f"first step {o['first_step_s']:.1f} s), {r['flops_per_step'] / 1e12:.3f} TFLOP/step; "
                f"target {r['target_clips_s']:.0f}" + (f"; COMPILE FAILED: {o['compile_failed']}"
                                                        if o.get("compile_failed") else ""))
    if name in ("adamw", "compile", "prefetch"):
        parts = [f"{k} {v['clips_s']:.1f}" for k, v in r.items() if isinstance(v, dict)]
        return f"clips/s {', '.join(parts)}; x{r['speedup']:.2f}"
    if name == "host_syncs":
        return (f"today {r['today']['per_step']} per step ({', '.join(r['today']['where'])}), "
                f"optimised {r['optimised']['per_step']}")
    if name == "loader":
        return (f"{r['delivered_clips_s']:.1f} clips/s from {r['workers']} workers vs {_f(r['consumed_clips_s'])} "
                f"consumed: headroom {_f(r['headroom'], '{:.2f}')} (target {r['target_headroom']})")
    if name in ("tokenize", "embed"):
        return f"{r['x_realtime']:.1f} x real time on {r['audio_s']:.0f} s of audio"
    if name == "train_asr":
        return f"{r['steps_s']:.2f} steps/s at batch {r['batch']} (estimate in resources.py: {r['estimate_steps_s']})"
    if name == "loss_curve":
        return (f"{r['steps']} steps: last-window mean loss today {r['last_window_mean'][0]:.4f}, optimised "
                f"{r['last_window_mean'][1]:.4f} (rel. diff {r['last_window_rel_diff']:.2%}, tolerance 2%)")
    return ""


def markdown(meta: dict, items: dict) -> str:
    lines = [f"# GPU check: {meta['device']}", "",
             f"{meta['mode']}; torch {meta['torch']}, CUDA {meta['cuda']}, {meta['cores']} cores; "
             f"{meta['started']}, {meta['wall_s']:.0f} s; code {meta['code_commit'][:10]}", "",
             "| measurement | status | result | target met |", "|---|---|---|---|"]
    for name in MEASUREMENTS:
        r = items[name]
        text = summary(name, r) if r["status"] == "ok" else r["reason"]
        met = {True: "yes", False: "no", None: "-"}[r.get("meets_target")]
        lines.append(f"| {name} | {r['status']} | {text.replace('|', '/')} | {met} |")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------


def preflight(args, results: Results) -> torch.device:
    """The device, or an error naming the first measurement that cannot run; what can be known
    to be missing before the run starts is recorded as a skip now."""
    if not args.cpu and not torch.cuda.is_available():
        raise NeedsCuda(f"gpu_check: {args.only[0] if args.only else MEASUREMENTS[0]} needs a CUDA GPU, and "
                        f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
                        f"{torch.version.cuda}); pass --cpu to run the CPU stand-in")
    device = torch.device("cpu" if args.cpu else "cuda")
    from encodecmae.training.speed import compile_unavailable

    why = compile_unavailable(args.profile.compile, device)
    if why and "compile" in args.only:
        results.skip("compile", f"torch.compile {args.profile.compile}: {why}")
    return device


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder of gpu_check.json and gpu_check.md")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (the stand-in for a GPU)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (debug models, a few steps): seconds")
    ap.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    ap.add_argument("--budget-s", type=float, default=450.0, help="wall time of all measurements (default 450)")
    ap.add_argument("--curve-steps", type=int, default=None, help="loss-curve steps (default 2000; tiny 6)")
    ap.add_argument("--compile-backend", default=None, choices=["inductor", "aot_eager"],
                    help="backend of the optimised step (default: inductor; tiny: aot_eager)")
    ap.add_argument("--work", default=None, help="folder of the synthetic corpus and runs (default: a temporary one)")
    ap.add_argument("--strict", action="store_true", help="stop at the first failure (tests)")
    args = ap.parse_args(argv)
    args.profile = tiny_profile() if args.tiny else gpu_profile()
    if args.curve_steps:
        args.profile.curve_steps = args.curve_steps
    if args.compile_backend:
        args.profile.compile = args.compile_backend
    return args


NOT_REACHED = "not reached: the run stopped before it (killed, or out of time)"


def write_results(out: Path, meta: dict, results: Results, final: bool) -> dict:
    """gpu_check.json and gpu_check.md, rewritten after every measurement, so that a run killed
    by the lease's time limit leaves what it measured (the others as not reached)."""
    meta = {**meta, "wall_s": time.monotonic() - results.t0, "finished": final}
    items = {name: results.items.get(name, {"status": "skipped", "reason": NOT_REACHED}) for name in MEASUREMENTS}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"meta": meta, "measurements": items}, indent=1) + "\n")
    (out / "gpu_check.md").write_text(markdown(meta, items))
    return items


def main(argv=None) -> int:
    args = parse(argv)
    results = Results(args.budget_s, args.strict)
    device = preflight(args, results)
    from encodecmae.provenance import code_state

    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (stand-in)",
            "mode": ("tiny" if args.tiny else "full") + (" on the CPU" if args.cpu else " on CUDA"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cores": os.cpu_count(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s,
            "targets": TARGETS, "argv": sys.argv[1:] if argv is None else list(argv), **code_state(),
            # the loader's workers hand batches over in shared memory: ~50 MB per base batch in flight
            "shm_free_gib": shutil.disk_usage("/dev/shm").free / 2**30 if Path("/dev/shm").is_dir() else None}
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        t = time.monotonic()
        ctx = Ctx(device, args.profile, work, write_corpus(work, args.profile), results)
        print(f"gpu_check: corpus written in {time.monotonic() - t:.1f} s", flush=True)
        steps = {"train_base": (measure_training, "base"), "train_large": (measure_training, "large"),
                 "host_syncs": (measure_syncs,), "loader": (measure_loader,), "tokenize": (measure_tokenize,),
                 "embed": (measure_embed,), "train_asr": (measure_asr,), "adamw": (measure_option, "adamw"),
                 "compile": (measure_option, "compile"), "prefetch": (measure_option, "prefetch"),
                 "loss_curve": (measure_curve,)}
        for name, (fn, *rest) in steps.items():  # in order of priority: the budget cuts the last
            if name not in args.only:
                results.skip(name, "not asked for (--only)")
            elif name not in results.items:
                results.run(name, args.profile.estimates.get(name, 0), fn, ctx, *rest)
            write_results(out, meta, results, final=False)
    items = write_results(out, meta, results, final=True)
    print((out / "gpu_check.md").read_text(), flush=True)
    return 1 if any(r["status"] == "failed" for r in items.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NeedsCuda as exc:
        sys.exit(str(exc))
