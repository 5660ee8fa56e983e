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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from encodecmae import SAMPLE_RATE
from encodecmae.progress import Progress, format_duration

YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
COOKIES_ENV = "ENCODECMAE_YTDLP_COOKIES"
PROXY_ENV = "ENCODECMAE_YTDLP_PROXY"
LEDGER_NAME = "status.tsv"
LEDGER_COLUMNS = ["ytid", "start", "end", "state", "reason", "detail", "attempts"]
STATUS_COLUMNS = [*LEDGER_COLUMNS, "seconds"]
STATES = ("downloaded", "unavailable", "failed")
# A section this much shorter than end - start is "truncated" (AudioSet's segments are up to 10 s,
# and a video that is a few frames shorter than the segment's end is no reason to drop it).
TRUNCATION_TOLERANCE = 0.5
# How long to wait for an attempt's thread after its deadline (FFmpeg killed) before giving up on it.
GRACE_SECONDS = 1.0
_YTID = re.compile(r"[A-Za-z0-9_-]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class YoutubeDownloadError(RuntimeError):
    """A job that cannot run, or whose share of failed segments is too large."""


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


# ----------------------------------------------------------------------------- secrets, errors


def _secret_values() -> list[str]:
    """The cookie and proxy settings' values (and their parts) that no message may show."""
    values = []
    proxy = os.environ.get(PROXY_ENV, "").strip()
    if proxy:
        values.append(proxy)
        m = re.match(r"[A-Za-z0-9+.-]+://([^@/]*)@", proxy)
        if m:  # user:password, also as it may appear on its own or split
            values += [m[1], *m[1].split(":", 1)]
    cookies = os.environ.get(COOKIES_ENV, "").strip()
    if cookies:
        values += [cookies, str(Path(cookies).expanduser())]
        try:  # the cookie values themselves (Netscape format: value is the 7th field)
            for line in Path(cookies).expanduser().read_text(errors="replace").splitlines():
                fields = line.split("\t")
                if len(fields) >= 7 and not line.startswith("# ") and len(fields[6]) >= 6:
                    values.append(fields[6])
        except OSError:
            pass
    # the longest first, so that a value containing another is replaced whole
    return sorted({v for v in values if len(v) >= 3}, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with the values of ENCODECMAE_YTDLP_COOKIES / _PROXY (and the cookie values and
    proxy credentials in them) replaced by ``***``."""
    for value in _secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return text


def _clean(message: str, secrets: list[str]) -> str:
    """A message as one scrubbed line for a TSV field: no 'ERROR:' prefix, colours, tabs or newlines."""
    message = _ANSI.sub("", str(message)).strip()
    message = re.sub(r"^(ERROR|WARNING):\s*", "", message)
    message = re.sub(r"\s+", " ", scrub(message, secrets))
    return message[:500]


# Ordered: the first pattern found in the lowercased message decides.
_MESSAGE_RULES: list[tuple[tuple[str, ...], str, str]] = [
    # YouTube's "Sign in to confirm you're not a bot" is about this IP address being throttled,
    # not about the video: transient, whatever "sign in" means elsewhere.
    (("not a bot",), "failed", "bot-check"),
    (("requested format is not available", "no video formats found"), "failed", "no-format"),
    (("private video", "video is private"), "unavailable", "private"),
    (("members-only", "members only", "channel's members", "join this channel"), "unavailable", "members-only"),
    (("confirm your age", "age-restricted", "age restricted", "inappropriate for some users"),
     "unavailable", "age-restricted"),
    (("copyright",), "unavailable", "copyright"),
    (("blocked it", "not available in your country", "not made this video available in your country",
      "geo restrict", "geo-restrict", "blocked"), "unavailable", "blocked"),
    (("account associated with this video has been terminated", "has been terminated"),
     "unavailable", "terminated"),
    (("removed",), "unavailable", "removed"),
    (("sign in",), "unavailable", "sign-in"),
    (("video unavailable", "video is unavailable", "is not available", "no longer available",
      "does not exist", "unsupported url", "is unavailable"), "unavailable", "unavailable"),
    (("timed out", "timeout"), "failed", "timeout"),
    (("connection", "urlopen error", "errno", "incomplete", "reset by peer", "refused", "name resolution",
      "temporary failure", "ssl", "transport", "unable to download", "network"), "failed", "network"),
    (("ffmpeg",), "failed", "ffmpeg"),
]
# 403 is not among them: YouTube answers it to an address it throttles or blocks and to an expired
# media URL, both transient; a video blocked for good says so in its message (handled above).
PERMANENT_HTTP = {404, 410}


def _http_status(exc: BaseException | None, message: str) -> int | None:
    """The HTTP status behind a yt-dlp error: from the exception chain, else from the message."""
    seen = 0
    while exc is not None and seen < 8:
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        seen += 1
    m = re.search(r"HTTP Error (\d{3})", message)
    return int(m[1]) if m else None


def classify_error(message: str, status: int | None = None) -> tuple[str, str]:
    """(state, reason) for a failed attempt's message and HTTP status, if any.

    ``unavailable`` (permanent) for HTTP 404/410 and yt-dlp's messages for removed, private,
    blocked, copyright-claimed, age-gated, sign-in and members-only videos; ``failed`` (transient)
    for everything else, unknown messages included: a rerun costs one request, a wrong
    ``unavailable`` loses the segment for good.
    """
    low = message.lower()
    if "not a bot" in low:
        return "failed", "bot-check"
    if status is not None:
        if status in PERMANENT_HTTP:
            return "unavailable", f"http-{status}"
        return "failed", f"http-{status}"
    for needles, state, reason in _MESSAGE_RULES:
        if any(n in low for n in needles):
            return state, reason
    return "failed", "error"


# ----------------------------------------------------------------------------- FFmpeg


def ffmpeg_exe() -> Path:
    """The FFmpeg binary of a dependency, never the system's: conda-forge's ``ffmpeg`` in the
    environment (``sys.prefix/bin``) when there is one, else the binary imageio-ffmpeg ships."""
    conda = Path(sys.prefix) / "bin" / "ffmpeg"
    if conda.exists():
        return conda
    import imageio_ffmpeg

    return Path(imageio_ffmpeg.get_ffmpeg_exe())


def deno_exe() -> str:
    """The deno binary that the ``deno`` package ships (yt-dlp's JavaScript runtime)."""
    import deno

    return deno.find_deno_bin()


class _FFmpegOnPath:
    """A private directory holding a symlink ``ffmpeg`` to ``exe``, first on PATH while in use
    (yt-dlp finds FFmpeg for section downloads only there, by that name)."""

    def __init__(self, exe: Path):
        self.exe = Path(exe)

    def __enter__(self) -> Path:
        from yt_dlp.downloader.external import FFmpegFD
        from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

        self.dir = Path(tempfile.mkdtemp(prefix="encodecmae-ffmpeg-"))
        link = self.dir / "ffmpeg"
        os.symlink(self.exe, link)
        self.old_path = os.environ.get("PATH")
        self.new_path = f"{self.dir}{os.pathsep}{self.old_path or ''}"
        os.environ["PATH"] = self.new_path
        # yt-dlp caches whether "ffmpeg" runs, per name: a check made before PATH had it says no.
        getattr(FFmpegPostProcessor, "_version_cache", {}).pop("ffmpeg", None)
        if not FFmpegFD.available():
            self.__exit__()
            raise YoutubeDownloadError(f"yt-dlp does not accept the FFmpeg binary {self.exe}")
        return link

    def __exit__(self, *exc) -> None:
        if os.environ.get("PATH") == self.new_path:  # unless someone changed it since
            if self.old_path is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = self.old_path
        shutil.rmtree(self.dir, ignore_errors=True)


def _kill_children_with(marker: str) -> int:
    """Kill this process's children whose command line contains ``marker`` (the FFmpeg yt-dlp runs
    for one attempt, named by its unique output path); returns how many. Linux (/proc) only."""
    me, killed = os.getpid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    needle = marker.encode()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            if int(stat.rsplit(b")", 1)[1].split()[1]) != me:
                continue
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed


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


# ----------------------------------------------------------------------------- one attempt


@dataclass
class _Segment:
    ytid: str
    start: float
    end: float
    name: str
    attempts: int = 0  # across runs (from the ledger) and this run
    tries: int = 0  # this run


@dataclass
class _Outcome:
    state: str
    reason: str
    detail: str
    seconds: float = 0.0
    flac: Path | None = None  # the checked FLAC under its temporary name
    nbytes: int = 0  # bytes yt-dlp fetched (pacing)


@dataclass
class _Attempt:
    seg: _Segment
    base: Path  # temporary path prefix, unique to this attempt
    deadline: float
    cancel: threading.Event = field(default_factory=threading.Event)
    skip: _Outcome | None = None  # set by the match filter (video too short, or deadline passed)
    abandoned: bool = False


class _YdlLogger:
    """yt-dlp's messages: debug and info dropped, errors left to the caller (they come back as the
    exception), warnings printed scrubbed and prefixed by the segment, each distinct warning (the
    video id left out) at most WARN_REPEATS times a job: one that every video gets (say, about a
    missing JavaScript runtime) would otherwise fill the log with thousands of copies."""

    WARN_REPEATS = 3

    def __init__(self, seg: _Segment, secrets: list[str], seen: Counter, lock: threading.Lock):
        self.seg, self.secrets, self.seen, self.lock = seg, secrets, seen, lock

    def debug(self, msg: str) -> None:
        pass

    info = debug
    error = debug

    def warning(self, msg: str) -> None:
        text = _clean(msg, self.secrets)
        with self.lock:
            self.seen[text.replace(self.seg.ytid, "ID")] += 1
            n = self.seen[text.replace(self.seg.ytid, "ID")]
        if n <= self.WARN_REPEATS:
            more = " (repeats of this warning are not shown)" if n == self.WARN_REPEATS else ""
            print(f"{self.seg.name}: yt-dlp: {text}{more}", file=sys.stderr, flush=True)


class _Runner:
    def __init__(self, audio_dir: Path, tmp: Path, ffmpeg: Path, url_template: str, timeout: float,
                 rate_limit: int | None, cookies: Path | None, proxy: str | None, secrets: list[str]):
        self.audio_dir, self.tmp, self.ffmpeg = audio_dir, tmp, ffmpeg
        self.url_template, self.timeout, self.rate_limit = url_template, timeout, rate_limit
        self.cookies, self.proxy, self.secrets = cookies, proxy, secrets
        self.warnings, self.lock = Counter(), threading.Lock()

    def _match_filter(self, attempt: _Attempt):
        seg = attempt.seg

        def check(info, *, incomplete=False):
            if attempt.cancel.is_set():  # the deadline passed during extraction: download nothing
                attempt.skip = _Outcome("failed", "timeout", f"no result within {self.timeout:g} s")
                return "deadline passed"
            duration = info.get("duration")
            # YouTube gives whole seconds; a video clearly shorter than the segment's end never
            # yields it (a permanent condition, unlike a download cut short)
            if not incomplete and isinstance(duration, (int, float)) and duration < seg.end - 1.0:
                attempt.skip = _Outcome("unavailable", "too-short",
                                        f"the video is {duration:g} s long, the segment ends at {seg.end:g} s")
                return "too short"
            return None

        return check

    def run(self, attempt: _Attempt) -> _Outcome:
        try:
            return self._run(attempt)
        except Exception as exc:  # anything unexpected is one failed segment, not a dead job
            return _Outcome("failed", "error", _clean(f"{type(exc).__name__}: {exc}", self.secrets))
        finally:
            for p in attempt.base.parent.glob(attempt.base.name + ".*"):
                if not p.name.endswith(".flac"):
                    p.unlink(missing_ok=True)

    def _run(self, attempt: _Attempt) -> _Outcome:
        import yt_dlp
        from yt_dlp.utils import download_range_func

        seg, base = attempt.seg, attempt.base
        opts = {
            "format": "bestaudio/best",
            "download_ranges": download_range_func(None, [(seg.start, seg.end)]),
            "outtmpl": {"default": f"{base}.%(ext)s"},
            "quiet": True, "noprogress": True, "color": "no_color",
            "logger": _YdlLogger(seg, self.secrets, self.warnings, self.lock),
            # retries are ours (with backoff, and a ledger across runs)
            "retries": 0, "fragment_retries": 0, "extractor_retries": 0, "file_access_retries": 0,
            "socket_timeout": self.timeout,
            "ffmpeg_location": str(self.ffmpeg),
            # FFmpeg's own read/write timeout (microseconds) for the section it downloads
            "external_downloader_args": {"ffmpeg_i": ["-rw_timeout", str(int(self.timeout * 1e6))]},
            "fixup": "never", "noplaylist": True, "overwrites": True, "updatetime": False,
            # YouTube's player challenges need a JavaScript runtime: the deno binary of the
            # dependency, never one from the system
            "js_runtimes": {"deno": {"path": deno_exe()}},
            "match_filter": self._match_filter(attempt),
        }
        if self.rate_limit:
            opts["ratelimit"] = self.rate_limit
        if self.cookies:
            copy = base.with_name(base.name + ".cookies.txt")
            shutil.copyfile(self.cookies, copy)
            os.chmod(copy, 0o600)
            opts["cookiefile"] = str(copy)
        if self.proxy:
            opts["proxy"] = self.proxy

        url = self.url_template.format(ytid=seg.ytid)
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=True)
        except yt_dlp.utils.DownloadError as exc:
            if attempt.cancel.is_set():
                return _Outcome("failed", "timeout", f"no result within {self.timeout:g} s")
            cause = exc.exc_info[1] if exc.exc_info else None
            message = _clean(exc.msg or str(exc), self.secrets)
            state, reason = classify_error(message, _http_status(cause, message))
            return _Outcome(state, reason, message)
        if attempt.skip is not None:
            return attempt.skip
        if attempt.cancel.is_set():
            return _Outcome("failed", "timeout", f"no result within {self.timeout:g} s")
        downloads = (info or {}).get("requested_downloads") or [{}]
        path = downloads[0].get("filepath")
        if not path or not Path(path).exists():
            found = [p for p in base.parent.glob(base.name + ".*") if not p.name.endswith((".cookies.txt", ".part"))]
            if not found:
                return _Outcome("failed", "no-file", "yt-dlp reported success but wrote no file")
            path = found[0]
        path = Path(path)
        nbytes = path.stat().st_size
        return self._convert(attempt, path, nbytes)

    def _convert(self, attempt: _Attempt, src: Path, nbytes: int) -> _Outcome:
        """The section as 24 kHz mono FLAC (cut to end - start), checked for length."""
        import soundfile as sf

        seg = attempt.seg
        want = seg.end - seg.start
        out = attempt.base.with_name(attempt.base.name + ".flac")
        remaining = attempt.deadline - time.monotonic()
        if remaining <= 0:
            return _Outcome("failed", "timeout", f"no result within {self.timeout:g} s")
        cmd = [str(self.ffmpeg), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
               "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-t", f"{want:.3f}", "-c:a", "flac", "-f", "flac", str(out)]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=remaining)
        except subprocess.TimeoutExpired:
            out.unlink(missing_ok=True)
            return _Outcome("failed", "timeout", f"conversion not done within {self.timeout:g} s")
        if res.returncode != 0:
            out.unlink(missing_ok=True)
            last = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
            return _Outcome("failed", "ffmpeg", _clean(f"converting to FLAC: {last}", self.secrets), nbytes=nbytes)
        # Decoded, not read from the header: a FLAC that FFmpeg wrote without any audio (the
        # transfer broke off before the section) has no sample count, and libsndfile reports one
        # of 2**63 - 1 frames, then fails to read it; what decodes is what we have.
        frames, problem = 0, ""
        try:
            f = sf.SoundFile(str(out))
        except RuntimeError as exc:
            out.unlink(missing_ok=True)
            return _Outcome("failed", "ffmpeg", _clean(f"unreadable FLAC: {exc}", self.secrets), nbytes=nbytes)
        with f:
            rate, channels = f.samplerate, f.channels
            try:
                for block in f.blocks(blocksize=1 << 16, dtype="int16"):
                    frames += len(block)
            except RuntimeError as exc:
                problem = f" ({_clean(str(exc), self.secrets)})"
        seconds = frames / rate
        if rate != SAMPLE_RATE or channels != 1:
            out.unlink(missing_ok=True)
            return _Outcome("failed", "ffmpeg", f"FLAC is {rate} Hz, {channels} channels", nbytes=nbytes)
        if seconds < want - TRUNCATION_TOLERANCE:
            out.unlink(missing_ok=True)
            return _Outcome("failed", "truncated", f"got {seconds:.2f} s of {want:.2f} s{problem}", seconds,
                            nbytes=nbytes)
        return _Outcome("downloaded", "ok", "", seconds, out, nbytes)


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

    cookies = os.environ.get(COOKIES_ENV, "").strip() or None
    if cookies and not Path(cookies).expanduser().is_file():
        raise YoutubeDownloadError(f"{COOKIES_ENV} does not name a readable cookies file")
    proxy = os.environ.get(PROXY_ENV, "").strip() or None
    if cookies:
        print(f"{label}: using the cookies file that {COOKIES_ENV} names", flush=True)
    if proxy:
        print(f"{label}: using the proxy that {PROXY_ENV} names", flush=True)

    # What earlier runs learned: finished FLACs and permanent failures are not tried again.
    known = read_ledger(ledger_path)
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
                    _schedule(todo, runner, ledger, results, audio_dir, parallel, retries, backoff, timeout, rate, bar)
        finally:
            ledger.close()
            shutil.rmtree(tmp, ignore_errors=True)

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

    failed = states.get("failed", 0)
    considered = len(segs) - states.get("unavailable", 0)
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


def _schedule(todo, runner: _Runner, ledger: _Ledger, results: dict, audio_dir: Path, parallel: int, retries: int,
              backoff: float, timeout: float, rate: int | None, bar: Progress) -> None:
    """Run the attempts, ``parallel`` at a time, with retries, deadlines and pacing."""
    done_q: queue.Queue = queue.Queue()
    counter = itertools.count()
    ready: list = [(0.0, next(counter), seg) for seg in todo]  # (not before, tie-break, segment)
    heapq.heapify(ready)
    running: dict[int, _Attempt] = {}
    stray: list[tuple[_Attempt, threading.Thread]] = []  # given up, maybe still running
    threads: dict[int, threading.Thread] = {}
    t0, fetched = time.monotonic(), 0

    def finish(seg: _Segment, out: _Outcome) -> None:
        if out.state == "downloaded" and out.flac is not None:
            os.replace(out.flac, audio_dir / f"{seg.name}.flac")  # checked: now it may have its name
        row = {"ytid": seg.ytid, "start": seg.start, "end": seg.end, "state": out.state, "reason": out.reason,
               "detail": out.detail, "attempts": seg.attempts}
        ledger.append(row)
        results[seg.name] = {**row, "seconds": out.seconds if out.state == "downloaded" else 0.0, "new": True}
        bar.update(1)

    def settle(attempt: _Attempt, out: _Outcome) -> None:
        nonlocal fetched
        seg = attempt.seg
        fetched += out.nbytes
        if attempt.cancel.is_set() and out.state != "downloaded":
            out = _Outcome("failed", "timeout", f"no result within {timeout:g} s")
        if out.state == "failed" and seg.tries <= retries:
            if out.flac:
                out.flac.unlink(missing_ok=True)
            heapq.heappush(ready, (time.monotonic() + backoff * 2 ** (seg.tries - 1), next(counter), seg))
            return
        finish(seg, out)

    while ready or running:
        now = time.monotonic()
        # Start attempts: free slots, segments whose backoff is over, and the pace within the limit.
        paced = rate is None or fetched <= rate * (now - t0)
        while ready and len(running) < parallel and ready[0][0] <= now and paced:
            _, _, seg = heapq.heappop(ready)
            seg.tries += 1
            seg.attempts += 1
            attempt = _Attempt(seg, runner.tmp / f"{seg.name}.a{seg.attempts}", now + timeout)
            thread = threading.Thread(target=lambda a=attempt: done_q.put((a, runner.run(a))), daemon=True,
                                      name=f"yt-{seg.name}")
            key = id(attempt)
            running[key], threads[key] = attempt, thread
            thread.start()
        # Wait for a result, a deadline, a backoff to end, or the pace to allow more.
        wakeups = [a.deadline + (GRACE_SECONDS if a.cancel.is_set() else 0) for a in running.values()]
        if ready and len(running) < parallel:
            wakeups.append(ready[0][0])
            if not paced:
                wakeups.append(t0 + fetched / rate)
        wait = max(0.0, min(wakeups, default=now + 0.5) - time.monotonic())
        try:
            attempt, out = done_q.get(timeout=min(wait, 0.5) + 0.01)
        except queue.Empty:
            pass
        else:
            if attempt.abandoned:  # its timeout is on record already; drop the late result
                if out.flac:
                    out.flac.unlink(missing_ok=True)
            else:
                running.pop(id(attempt), None)
                threads.pop(id(attempt), None)
                settle(attempt, out)
        # Deadlines: kill the attempt's FFmpeg; give up on attempts that still do not return.
        now = time.monotonic()
        for key, attempt in list(running.items()):
            if now >= attempt.deadline and not attempt.cancel.is_set():
                attempt.cancel.set()
                _kill_children_with(str(attempt.base))
            elif attempt.cancel.is_set() and now >= attempt.deadline + GRACE_SECONDS:
                attempt.abandoned = True
                stray.append((attempt, threads.pop(key)))
                del running[key]
                settle(attempt, _Outcome("failed", "timeout", f"no result within {timeout:g} s"))
        for attempt, thread in stray:  # an abandoned attempt must not leave an FFmpeg behind
            if thread.is_alive():
                _kill_children_with(str(attempt.base))
    for attempt, thread in stray:
        if thread.is_alive():
            _kill_children_with(str(attempt.base))


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
