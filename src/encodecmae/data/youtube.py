"""Downloading AudioSet's segments from YouTube: one workflow job per "part" of a few thousand.

AudioSet is published as lists of 10-s segments of YouTube videos (``read_segment_lists``), and
every copy of it is whatever part of those videos is still online. A job (``download_part``)
takes one slice of the lists (``part_segments``) and, for each segment, downloads only its
[start, end] section of the best audio-only format with yt-dlp and converts it to a 24 kHz mono
FLAC, ``AUDIO_DIR/{ytid}_{start_ms:08d}.flac`` (written to a temporary name and renamed once its
length is checked, so a file with the final name is always complete).

Each segment ends a run in one of three states, with a short machine-readable ``reason`` and the
(scrubbed) message as ``detail``:

* ``downloaded``;
* ``unavailable``: permanent, never tried again (HTTP 404/410; removed, private, blocked,
  copyright-claimed, age-gated, sign-in or members-only videos; a video shorter than the
  segment's end);
* ``failed``: transient (network errors, HTTP 429 and 5xx, YouTube's bot check, timeouts, a
  section shorter than asked for, FFmpeg errors). Retried ``retries`` times within the run with
  exponential backoff, and again by the next run.

What a job learns is kept in a ledger, ``AUDIO_DIR/status.tsv``, one line appended per segment as
it finishes (the last line of a segment wins), so a killed job loses nothing: the next run skips
the segments whose FLAC exists and those marked unavailable, and tries the others again. At the
end the job writes its status table (one row per segment of the part), unless more than
``max_failed_fraction`` of the segments failed: then it raises, and a rerun retries them.

This module holds the segment lists, the ledger, the scheduling of a part and the command line;
``youtube_errors`` the secrets and the error classes, ``youtube_fetch`` one attempt (yt-dlp and
FFmpeg).

Design notes:

* FFmpeg comes from a dependency, never the system (``ffmpeg_exe``). yt-dlp cuts sections with
  FFmpeg, but decides whether it can by looking for an executable literally named ``ffmpeg`` on
  PATH (it ignores ``ffmpeg_location`` there), and imageio-ffmpeg's binary has a versioned name and
  no ffprobe: the job makes a private directory with a symlink ``ffmpeg`` to the chosen binary and
  puts it first on PATH while it runs. The conversion to FLAC is done by the same binary, not by
  yt-dlp's postprocessors (they need ffprobe).
* Stalls: every segment (download and conversion) must finish within ``timeout`` seconds. yt-dlp's
  ``socket_timeout`` bounds each of its own HTTP reads, ``-rw_timeout`` each read of the FFmpeg it
  runs for the section; neither bounds a server that trickles bytes, so the job also watches the
  clock: at a segment's deadline it kills that segment's FFmpeg processes (found under /proc by
  the segment's unique temporary path in their command line) and, should yt-dlp still not return,
  gives the segment up as ``failed``/``timeout`` and goes on (the thread is left to end on its own;
  its late result is discarded).
* Concurrency: ``parallel`` segments at once, each attempt in its own thread with its own
  YoutubeDL instance; the main thread alone renames files and writes the ledger.
* Rate limit: yt-dlp's ``ratelimit`` only throttles its native HTTP downloader, and section
  downloads go through FFmpeg, so the job also paces itself: it starts no new segment while the
  bytes fetched so far exceed ``rate_limit`` times the time elapsed.
* Cookies and proxy come only from the environment (``ENCODECMAE_YTDLP_COOKIES``: a cookies.txt,
  ``ENCODECMAE_YTDLP_PROXY``: a proxy URL). Their values are scrubbed from every message the job
  stores or prints, and each attempt reads a private copy of the cookies file (yt-dlp writes the
  cookie jar back to its file when it closes, which parallel instances would race on).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import itertools
import os
import queue
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from encodecmae import SAMPLE_RATE
from encodecmae.data.youtube_errors import (  # noqa: F401 (COOKIES_ENV ... classify_error: this module's interface)
    COOKIES_ENV,
    PROXY_ENV,
    YoutubeDownloadError,
    _secret_values,
    classify_error,
    scrub,
)
from encodecmae.data.youtube_fetch import (  # noqa: F401 (TRUNCATION_TOLERANCE, ffmpeg_exe: this module's interface)
    TRUNCATION_TOLERANCE,
    _Attempt,
    _FFmpegOnPath,
    _kill_children_with,
    _Outcome,
    _Runner,
    _Segment,
    ffmpeg_exe,
)
from encodecmae.progress import Progress, format_duration

YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
LEDGER_NAME = "status.tsv"
LEDGER_COLUMNS = ["ytid", "start", "end", "state", "reason", "detail", "attempts"]
STATUS_COLUMNS = [*LEDGER_COLUMNS, "seconds"]
STATES = ("downloaded", "unavailable", "failed")
# How long to wait for an attempt's thread after its deadline (FFmpeg killed) before giving up on it.
GRACE_SECONDS = 1.0
_YTID = re.compile(r"[A-Za-z0-9_-]+")


# ----------------------------------------------------------------------------- segment lists


def read_segment_lists(paths) -> pd.DataFrame:
    """AudioSet's segment CSVs, concatenated in the order given: columns ytid, start, end, labels.

    The official format is three comment lines (``#``) then rows like
    ``--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"`` (a space after each comma, the labels
    quoted). Rows repeating an earlier (ytid, start) are dropped, the first kept. A malformed row
    raises ValueError naming the file and line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = next(csv.reader([line], skipinitialspace=True))
                where = f"{path}:{lineno}"
                if len(fields) != 4:
                    raise ValueError(f"{where}: expected 4 fields (YTID, start_seconds, end_seconds, "
                                     f"positive_labels), got {len(fields)}: {line.strip()!r}")
                ytid, start, end, labels = (x.strip() for x in fields)
                if not _YTID.fullmatch(ytid):  # also keeps the id safe to use as a file name
                    raise ValueError(f"{where}: invalid YouTube id {ytid!r}")
                try:
                    start_s, end_s = float(start), float(end)
                except ValueError:
                    raise ValueError(f"{where}: start and end must be seconds, got {start!r}, {end!r}") from None
                if not (0 <= start_s < end_s < float("inf")):
                    raise ValueError(f"{where}: need 0 <= start < end, got {start_s}, {end_s}")
                rows.append((ytid, start_s, end_s, labels))
    table = pd.DataFrame(rows, columns=["ytid", "start", "end", "labels"])
    table = table.astype({"ytid": str, "start": float, "end": float, "labels": str})
    return table.drop_duplicates(["ytid", "start"], keep="first").reset_index(drop=True)


def part_segments(table: pd.DataFrame, part: int, per_job: int, last: bool = False) -> pd.DataFrame:
    """The rows of job ``part`` (0-based): rows [part * per_job, (part + 1) * per_job).

    The workflow plans its number of parts from a configured segment count that may be a little
    off, so the ``last`` planned part also takes every row beyond its slice; a part past the end
    of the table is empty (its job writes an empty status table).
    """
    if part < 0 or per_job < 1:
        raise ValueError(f"need part >= 0 and per_job >= 1, got part={part}, per_job={per_job}")
    begin = part * per_job
    return table.iloc[begin : None if last else begin + per_job].reset_index(drop=True)


def segment_name(ytid: str, start: float) -> str:
    """``("--PJHxphWEs", 30.0)`` -> ``--PJHxphWEs_00030000`` (the FLAC's name without suffix)."""
    return f"{ytid}_{round(start * 1000):08d}"


# ----------------------------------------------------------------------------- ledger


def _fmt_seconds(x: float) -> str:
    return f"{x:.3f}"


def read_ledger(path: str | Path) -> dict[tuple[str, int], dict]:
    """The ledger's last row per segment, keyed by (ytid, start in ms). Tolerates what appending
    jobs may leave: a cut last line, repeated headers, lines from other parts."""
    rows: dict[tuple[str, int], dict] = {}
    path = Path(path)
    if not path.exists():
        return rows
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line in f:
            if not line.endswith("\n"):
                continue  # a line a killed job did not finish (the next job ends it, see _Ledger)
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != len(LEDGER_COLUMNS) or fields[0] == "ytid":
                continue
            row = dict(zip(LEDGER_COLUMNS, fields))
            try:
                row["start"], row["end"], row["attempts"] = float(row["start"]), float(row["end"]), int(row["attempts"])
            except ValueError:
                continue
            if row["state"] in STATES:
                rows[(row["ytid"], round(row["start"] * 1000))] = row
    return rows


class _Ledger:
    """Appends one line per finished segment. Parts of one corpus may share the file: each line is
    one write() on an O_APPEND descriptor, so lines of concurrent jobs do not interleave."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self.fd).st_size
        if size == 0:
            os.write(self.fd, ("\t".join(LEDGER_COLUMNS) + "\n").encode())
        elif os.pread(self.fd, 1, size - 1) != b"\n":
            # a job killed mid-line: end that line (the reader drops it) rather than extend it
            os.write(self.fd, b"\n")

    def append(self, row: dict) -> None:
        fields = [row["ytid"], _fmt_seconds(row["start"]), _fmt_seconds(row["end"]), row["state"],
                  row["reason"], row["detail"].replace("\t", " ").replace("\n", " "), str(row["attempts"])]
        os.write(self.fd, ("\t".join(fields) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)


# ----------------------------------------------------------------------------- a part


def _parse_rate(rate_limit) -> int | None:
    """Bytes per second from ``2000000``, ``"2M"``, ``"500K"`` (binary prefixes, as yt-dlp's) or None."""
    if rate_limit in (None, "", 0, "0"):
        return None
    if isinstance(rate_limit, (int, float)):
        value = int(rate_limit)
    else:
        from yt_dlp.utils import parse_bytes

        value = parse_bytes(str(rate_limit).strip())
    if not value or value <= 0:
        raise ValueError(f"rate limit must be a positive number of bytes/s (e.g. 2000000 or 2M), got {rate_limit!r}")
    return value


def _segments(segments) -> list[_Segment]:
    out = []
    for row in segments.itertuples(index=False) if isinstance(segments, pd.DataFrame) else segments:
        ytid, start, end = (row.ytid, row.start, row.end) if hasattr(row, "ytid") else (row[0], row[1], row[2])
        if not _YTID.fullmatch(str(ytid)):
            raise ValueError(f"invalid YouTube id {ytid!r}")
        out.append(_Segment(str(ytid), float(start), float(end), segment_name(str(ytid), float(start))))
    return out


def _flac_seconds(path: Path) -> float | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):
        return None
    # only FLACs checked by decoding get the final name; the bounds catch one damaged since
    if info.samplerate != SAMPLE_RATE or not 0 < info.frames < SAMPLE_RATE * 86_400:
        return None
    return info.frames / info.samplerate


def _proxy_settings(label: str) -> tuple[str | None, str | None]:
    """The cookies file and proxy the environment names (see the module docstring), announced."""
    cookies = os.environ.get(COOKIES_ENV, "").strip() or None
    if cookies and not Path(cookies).expanduser().is_file():
        raise YoutubeDownloadError(f"{COOKIES_ENV} does not name a readable cookies file")
    proxy = os.environ.get(PROXY_ENV, "").strip() or None
    if cookies:
        print(f"{label}: using the cookies file that {COOKIES_ENV} names", flush=True)
    if proxy:
        print(f"{label}: using the proxy that {PROXY_ENV} names", flush=True)
    return cookies, proxy


def _known_results(segs: list[_Segment], audio_dir: Path, known: dict) -> tuple[dict[str, dict], list[_Segment]]:
    """What earlier runs learned (the ledger ``known`` and the FLACs on disk): the results of the
    segments done or unavailable, which are not tried again, and the segments to download."""
    results: dict[str, dict] = {}
    todo: list[_Segment] = []
    seen: set[str] = set()
    for seg in segs:
        if seg.name in seen:
            continue  # the same segment twice in the part
        seen.add(seg.name)
        row = known.get((seg.ytid, round(seg.start * 1000)))
        seg.attempts = row["attempts"] if row else 0
        flac = audio_dir / f"{seg.name}.flac"
        seconds = _flac_seconds(flac) if flac.exists() else None
        if seconds is not None:
            kept = row if row and row["state"] == "downloaded" else None
            results[seg.name] = {"state": "downloaded", "reason": kept["reason"] if kept else "ok",
                                 "detail": kept["detail"] if kept else "found on disk",
                                 "attempts": seg.attempts, "seconds": seconds, "new": False}
        elif row and row["state"] == "unavailable":
            results[seg.name] = {**{k: row[k] for k in ("state", "reason", "detail", "attempts")},
                                 "seconds": 0.0, "new": False}
        else:
            todo.append(seg)
    return results, todo


def _status_table(segs: list[_Segment], results: dict, secrets: list[str], label: str,
                  ledger_path: Path) -> tuple[pd.DataFrame, dict]:
    """The part's status table (one row per segment) and its summary, printed."""
    rows = []
    for seg in segs:
        r = results[seg.name]
        rows.append({"ytid": seg.ytid, "start": _fmt_seconds(seg.start), "end": _fmt_seconds(seg.end),
                     "state": r["state"], "reason": r["reason"], "detail": scrub(r["detail"], secrets),
                     "attempts": r["attempts"], "seconds": _fmt_seconds(r["seconds"])})
    table = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    states = Counter(table["state"])
    reasons = Counter(f"{s}/{r}" for s, r in zip(table["state"], table["reason"]))
    hours = sum(r["seconds"] for r in results.values() if r["state"] == "downloaded") / 3600
    new_hours = sum(r["seconds"] for r in results.values() if r["state"] == "downloaded" and r["new"]) / 3600
    summary = {"segments": len(segs), "states": {s: states.get(s, 0) for s in STATES}, "reasons": dict(reasons),
               "hours": hours, "new_hours": new_hours, "status": None, "ledger": str(ledger_path)}
    parts = []
    for s in STATES:
        detail = ", ".join(f"{k.split('/', 1)[1]} {n}" for k, n in sorted(reasons.items()) if k.startswith(s + "/"))
        parts.append(f"{s} {states.get(s, 0)}" + (f" ({detail})" if detail else ""))
    print(f"{label}: {len(segs)} segments: {'; '.join(parts)}; audio {hours:.2f} h ({format_duration(hours * 3600)}), "
          f"{new_hours:.2f} h ({format_duration(new_hours * 3600)}) of it new", flush=True)
    return table, summary


def download_part(segments, audio_dir, status_out, url_template: str = YOUTUBE_URL, parallel: int = 4,
                  rate_limit=None, retries: int = 3, backoff: float = 2.0, timeout: float = 120.0,
                  max_failed_fraction: float = 0.05, progress_interval: float | None = None) -> dict:
    """Download ``segments`` (a table with ytid, start, end) as 24 kHz mono FLACs in ``audio_dir``.

    See the module docstring. Appends each finished segment to ``audio_dir/status.tsv`` and, at
    the end, writes ``status_out`` (TSV: ytid, start, end, state, reason, detail, attempts,
    seconds; one row per segment) atomically, unless the failed segments are more than
    ``max_failed_fraction`` of those not unavailable: then raises YoutubeDownloadError (and
    removes an older ``status_out``). Returns a summary: counts per state and per
    "state/reason", hours of audio in the part and downloaded by this run.
    """
    if "{ytid}" not in url_template:
        raise ValueError(f"url_template must contain {{ytid}}, got {url_template!r}")
    if parallel < 1 or retries < 0 or timeout <= 0 or backoff < 0 or not 0 <= max_failed_fraction <= 1:
        raise ValueError("need parallel >= 1, retries >= 0, timeout > 0, backoff >= 0 and "
                         "0 <= max_failed_fraction <= 1")
    rate = _parse_rate(rate_limit)
    segs = _segments(segments)
    audio_dir, status_out = Path(audio_dir).resolve(), Path(status_out)
    audio_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = audio_dir / LEDGER_NAME
    label = f"download-youtube {status_out.stem}"
    secrets = _secret_values()
    cookies, proxy = _proxy_settings(label)
    results, todo = _known_results(segs, audio_dir, read_ledger(ledger_path))
    print(f"{label}: {len(segs)} segments, {len(segs) - len(todo)} done or unavailable in earlier runs, "
          f"{len(todo)} to download ({parallel} at once, timeout {timeout:g} s)", flush=True)

    # a killed job's scratch folder (one job per part folder: none is in use now)
    for stale in audio_dir.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if todo:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{socket.gethostname()}-{os.getpid()}-", dir=audio_dir))
        ledger = _Ledger(ledger_path)
        try:
            with _FFmpegOnPath(ffmpeg_exe()) as ffmpeg:
                cookie_file = Path(cookies).expanduser() if cookies else None
                runner = _Runner(audio_dir, tmp, ffmpeg, url_template, timeout, rate, cookie_file, proxy, secrets)
                kw = {} if progress_interval is None else {"interval": progress_interval}
                with Progress(label, total=len(todo), unit="segment", **kw) as bar:
                    _Schedule(runner, ledger, results, audio_dir, retries, backoff, timeout, rate, bar).run(
                        todo, parallel)
        finally:
            ledger.close()
            shutil.rmtree(tmp, ignore_errors=True)

    table, summary = _status_table(segs, results, secrets, label, ledger_path)
    failed = summary["states"]["failed"]
    considered = len(segs) - summary["states"]["unavailable"]
    if considered and failed / considered > max_failed_fraction:
        status_out.unlink(missing_ok=True)  # no older table may claim the part is done
        raise YoutubeDownloadError(
            f"{failed} of {considered} available segments failed ({100 * failed / considered:.1f}% > "
            f"{100 * max_failed_fraction:g}%); {status_out} not written. The ledger {ledger_path} keeps "
            f"what was learned and a rerun retries the failed segments")
    status_out.parent.mkdir(parents=True, exist_ok=True)
    partial = status_out.with_name(status_out.name + ".partial")
    table.to_csv(partial, sep="\t", index=False)
    os.replace(partial, status_out)
    summary["status"] = str(status_out)
    return summary


class _Schedule:
    """Runs the attempts, ``parallel`` at a time, with retries, deadlines and pacing; the main
    thread alone renames files and writes the ledger (``finish``)."""

    def __init__(self, runner: _Runner, ledger: _Ledger, results: dict, audio_dir: Path, retries: int,
                 backoff: float, timeout: float, rate: int | None, bar: Progress):
        self.runner, self.ledger, self.results, self.audio_dir = runner, ledger, results, audio_dir
        self.retries, self.backoff, self.timeout, self.rate, self.bar = retries, backoff, timeout, rate, bar
        self.done_q: queue.Queue = queue.Queue()
        self.counter = itertools.count()
        self.ready: list = []  # heap of (not before, tie-break, segment)
        self.running: dict[int, _Attempt] = {}
        self.stray: list[tuple[_Attempt, threading.Thread]] = []  # given up, maybe still running
        self.threads: dict[int, threading.Thread] = {}
        self.t0, self.fetched = time.monotonic(), 0

    def finish(self, seg: _Segment, out: _Outcome) -> None:
        if out.state == "downloaded" and out.flac is not None:
            os.replace(out.flac, self.audio_dir / f"{seg.name}.flac")  # checked: now it may have its name
        row = {"ytid": seg.ytid, "start": seg.start, "end": seg.end, "state": out.state, "reason": out.reason,
               "detail": out.detail, "attempts": seg.attempts}
        self.ledger.append(row)
        self.results[seg.name] = {**row, "seconds": out.seconds if out.state == "downloaded" else 0.0, "new": True}
        self.bar.update(1)

    def settle(self, attempt: _Attempt, out: _Outcome) -> None:
        seg = attempt.seg
        self.fetched += out.nbytes
        if attempt.cancel.is_set() and out.state != "downloaded":
            out = _Outcome("failed", "timeout", f"no result within {self.timeout:g} s")
        if out.state == "failed" and seg.tries <= self.retries:
            if out.flac:
                out.flac.unlink(missing_ok=True)
            heapq.heappush(self.ready, (time.monotonic() + self.backoff * 2 ** (seg.tries - 1), next(self.counter),
                                        seg))
            return
        self.finish(seg, out)

    def start(self, seg: _Segment, now: float) -> None:
        seg.tries += 1
        seg.attempts += 1
        attempt = _Attempt(seg, self.runner.tmp / f"{seg.name}.a{seg.attempts}", now + self.timeout)
        thread = threading.Thread(target=lambda a=attempt: self.done_q.put((a, self.runner.run(a))), daemon=True,
                                  name=f"yt-{seg.name}")
        key = id(attempt)
        self.running[key], self.threads[key] = attempt, thread
        thread.start()

    def receive(self, wait: float) -> None:
        """Settle the next result that comes within ``wait`` seconds, if any."""
        try:
            attempt, out = self.done_q.get(timeout=wait)
        except queue.Empty:
            return
        if attempt.abandoned:  # its timeout is on record already; drop the late result
            if out.flac:
                out.flac.unlink(missing_ok=True)
        else:
            self.running.pop(id(attempt), None)
            self.threads.pop(id(attempt), None)
            self.settle(attempt, out)

    def enforce_deadlines(self) -> None:
        """Kill the FFmpeg of an attempt past its deadline; give up on one that still does not return."""
        now = time.monotonic()
        for key, attempt in list(self.running.items()):
            if now >= attempt.deadline and not attempt.cancel.is_set():
                attempt.cancel.set()
                _kill_children_with(str(attempt.base))
            elif attempt.cancel.is_set() and now >= attempt.deadline + GRACE_SECONDS:
                attempt.abandoned = True
                self.stray.append((attempt, self.threads.pop(key)))
                del self.running[key]
                self.settle(attempt, _Outcome("failed", "timeout", f"no result within {self.timeout:g} s"))
        self.kill_strays()

    def kill_strays(self) -> None:  # an abandoned attempt must not leave an FFmpeg behind
        for attempt, thread in self.stray:
            if thread.is_alive():
                _kill_children_with(str(attempt.base))

    def run(self, todo: list[_Segment], parallel: int) -> None:
        self.ready = [(0.0, next(self.counter), seg) for seg in todo]
        heapq.heapify(self.ready)
        ready, running, rate = self.ready, self.running, self.rate
        while ready or running:
            now = time.monotonic()
            # Start attempts: free slots, segments whose backoff is over, and the pace within the limit.
            paced = rate is None or self.fetched <= rate * (now - self.t0)
            while ready and len(running) < parallel and ready[0][0] <= now and paced:
                self.start(heapq.heappop(ready)[2], now)
            # Wait for a result, a deadline, a backoff to end, or the pace to allow more.
            wakeups = [a.deadline + (GRACE_SECONDS if a.cancel.is_set() else 0) for a in running.values()]
            if ready and len(running) < parallel:
                wakeups.append(ready[0][0])
                if not paced:
                    wakeups.append(self.t0 + self.fetched / rate)
            wait = max(0.0, min(wakeups, default=now + 0.5) - time.monotonic())
            self.receive(min(wait, 0.5) + 0.01)
            self.enforce_deadlines()
        self.kill_strays()


# ----------------------------------------------------------------------------- command line


def register(sub) -> None:
    p = sub.add_parser("download-youtube",
                       help="download one part of AudioSet's segments from YouTube as 24 kHz mono FLAC")
    p.add_argument("--segment-lists", nargs="+", required=True, metavar="CSV",
                   help="AudioSet segment CSVs, in order (e.g. balanced_train_segments.csv ...)")
    p.add_argument("--part", type=int, required=True, help="this job's part, 0-based")
    p.add_argument("--parts", type=int, required=True, help="number of parts planned (the last takes the rest)")
    p.add_argument("--per-job", type=int, required=True, help="segments per part")
    p.add_argument("--audio-dir", required=True, help="directory of the FLACs and the ledger status.tsv")
    p.add_argument("--status", required=True, help="status table of the part to write (TSV)")
    p.add_argument("--url-template", default=YOUTUBE_URL, help="URL of a video, with {ytid} (default: %(default)s)")
    p.add_argument("--parallel", type=int, default=4, help="segments downloaded at once (default: %(default)s)")
    p.add_argument("--rate-limit", default=None, help="bytes/s for the whole job, e.g. 2M (default: none)")
    p.add_argument("--retries", type=int, default=3, help="retries of a transient failure within the run")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per segment (default: %(default)s)")
    p.add_argument("--max-failed-fraction", type=float, default=0.05,
                   help="fail the job (no status table) when more of the segments failed (default: %(default)s)")
    p.set_defaults(func=cmd_download_youtube)


def cmd_download_youtube(args: argparse.Namespace) -> None:
    try:
        if not 0 <= args.part < args.parts:
            raise ValueError(f"--part must be in [0, --parts), got {args.part} of {args.parts}")
        table = read_segment_lists(args.segment_lists)
        segments = part_segments(table, args.part, args.per_job, last=args.part == args.parts - 1)
        download_part(segments, args.audio_dir, args.status, url_template=args.url_template, parallel=args.parallel,
                      rate_limit=args.rate_limit, retries=args.retries, timeout=args.timeout,
                      max_failed_fraction=args.max_failed_fraction)
    except (YoutubeDownloadError, ValueError, OSError) as exc:
        sys.exit(f"download-youtube: {scrub(str(exc))}")
