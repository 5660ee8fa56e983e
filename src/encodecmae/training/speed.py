"""How fast a training step runs, without changing what it computes: the AdamW implementation,
torch.compile of the model's training pass, and a loader that makes batches ready on the device
ahead of the step.

Each is a job option of ``train`` (``--adamw``, ``--compile``, ``--prefetch``), off by default:
the default step is today's step, bit for bit. Each says what actually runs (``Speed``), since
each falls back where this torch or this machine cannot do what was asked: fused AdamW without
a fused kernel for the device runs foreach, compile where dynamo or the backend's compiler is
missing runs eager. The fallback is printed and recorded, never silent.

What they change in the numbers (tests/test_train.py pins each on the CPU): prefetching none (the
batches are a pure function of the step); the AdamW implementations and compile the last bits
of the weights (they order the same float operations differently).
"""

from __future__ import annotations

import queue
import shutil
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch


@dataclass
class Speed:
    """What runs, as resolved on this machine (``notes``: each fallback and why)."""

    adamw: str = "for-loop"  # for-loop | foreach | fused
    compile: str = "off"  # off | inductor | aot_eager
    prefetch: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"AdamW {self.adamw}, compile {self.compile}, prefetch {self.prefetch}"
        return text + (f" ({'; '.join(self.notes)})" if self.notes else "")


# --- AdamW -------------------------------------------------------------------------------------


def _default_impl(params: list[torch.Tensor]) -> str:
    """The implementation torch picks when neither fused nor foreach is asked for."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    return "fused" if fused else "foreach" if foreach else "for-loop"


def _fused_unavailable(params: list[torch.Tensor]) -> str | None:
    """Why this torch has no fused AdamW for these parameters (None: it has). torch itself only
    finds out at the first step; this is its check, made up front."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    bad = sorted({f"{p.dtype} on {p.device.type}" for p in params
                  if p.device.type not in devices or not torch.is_floating_point(p)})
    return f"no fused kernel for {', '.join(bad)}; this torch has them for {', '.join(devices)}" if bad else None


def adamw(params: list[torch.Tensor], impl: str, speed: Speed, **hyper) -> torch.optim.AdamW:
    """AdamW over ``params`` with implementation ``impl`` (default, foreach, fused); records in
    ``speed`` the one that runs. ``default`` passes neither flag (today's optimiser, whose state
    dict a checkpoint holds byte for byte)."""
    if impl == "default":
        speed.adamw = _default_impl(params)
        return torch.optim.AdamW(params, **hyper)
    if impl == "fused":
        why = _fused_unavailable(params)
        if why is None:
            speed.adamw = "fused"
            return torch.optim.AdamW(params, fused=True, **hyper)
        speed.notes.append(f"fused AdamW unavailable ({why}); foreach instead")
    elif impl != "foreach":
        raise ValueError(f"unknown AdamW implementation {impl!r} (expected default, foreach or fused)")
    speed.adamw = "foreach"
    return torch.optim.AdamW(params, foreach=True, **hyper)


def set_adamw_impl(opt: torch.optim.Optimizer, impl: str, speed: Speed) -> None:
    """After ``load_state_dict``, which brings back the saved groups' flags (and ``step`` where the
    saving implementation kept it): the implementation this job chose (``impl``, resolved in
    ``speed``), so a run may be resumed with another. Fused keeps ``step`` as a float32 tensor on
    the parameter's device, the others on the CPU."""
    fused = speed.adamw == "fused"
    flags = (None, None) if impl == "default" else (True, False) if fused else (None, True)
    for group in opt.param_groups:
        group["fused"], group["foreach"] = flags
        for p in group["params"]:
            state = opt.state.get(p, {})
            if "step" in state:
                state["step"] = state["step"].to(device=p.device if fused else "cpu", dtype=torch.float32)


# --- torch.compile -----------------------------------------------------------------------------


def compile_unavailable(backend: str, device: torch.device) -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run here (None: it can), checked before the
    first step rather than found out inside it."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python or platform"
    if backend == "inductor":
        if device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                return "inductor on CUDA needs triton, which is not installed"
        elif not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "inductor on the CPU needs a C++ compiler (g++, c++ or clang++) on PATH"
    return None


def maybe_compile(module: torch.nn.Module, backend: str, device: torch.device, speed: Speed) -> torch.nn.Module:
    """``module`` compiled with ``backend`` (``off``: as it is). The model's pass holds two
    data-dependent shapes (the number of visible frames, the scatter of the encoder's output),
    so dynamo splits it into a few graphs there; a batch with another number of visible frames
    compiles once more, with that size dynamic."""
    if backend == "off":
        speed.compile = "off"
        return module
    why = compile_unavailable(backend, device)
    if why:
        speed.compile = "off"
        speed.notes.append(f"compile {backend} unavailable: {why}; eager instead")
        return module
    speed.compile = backend
    return torch.compile(module, backend=backend)


# --- prefetching -------------------------------------------------------------------------------

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterator[tuple[int, object]], device: torch.device, depth: int) -> Iterator[tuple[int, object]]:
    """(step, batch) pairs of ``items``, each batch already on ``device``, made ``depth`` ahead by
    a background thread (``depth`` 0: ``items`` as they are).

    On CUDA the thread copies each pinned batch with non-blocking copies on a side stream and
    records an event; the step's stream waits on that event (no host synchronisation), and the
    batch's memory is marked as used by the step's stream so the allocator does not hand it to a
    later copy while the step still reads it. On the CPU the thread makes the batches ahead (the
    DataLoader's workers, or the main process with none). ``items`` is created by the caller (in
    the main thread: a DataLoader starts its worker processes there).
    """
    if depth <= 0:
        yield from items
        return
    cuda = device.type == "cuda"
    side = torch.cuda.Stream(device) if cuda else None
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.cuda.stream(side) if cuda else nullcontext():
                for step, batch in items:
                    event = None
                    if cuda:
                        batch = (batch if batch.wav.is_pinned() else batch.pin_memory()).to(device)
                        event = torch.cuda.Event()
                        event.record(side)
                    if not put((step, batch, event)):
                        return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            step, batch, event = item
            if event is not None:
                stream = torch.cuda.current_stream(device)
                stream.wait_event(event)
                for t in (batch.wav, batch.targets, batch.lengths, batch.mask):
                    t.record_stream(stream)
            yield step, batch
    finally:
        stop.set()
        thread.join(timeout=5.0)


def steps_of(loader: Iterable, start: int, stop: int) -> Iterator[tuple[int, object]]:
    """(step number, batch) for steps start+1 .. stop; the loader's iterator is made here, in the
    calling thread."""
    return zip(range(start + 1, stop + 1), iter(loader))
