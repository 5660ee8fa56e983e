"""One attempt at one AudioSet segment (encodecmae.data.youtube): yt-dlp fetches the section with
the dependency's FFmpeg, which then converts it to a checked 24 kHz mono FLAC; the FFmpeg
processes of an attempt past its deadline are killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from encodecmae import SAMPLE_RATE
from encodecmae.data.youtube_errors import (
    YoutubeDownloadError,
    _clean,
    _http_status,
    classify_error,
)

# A section this much shorter than end - start is "truncated" (AudioSet's segments are up to 10 s,
# and a video that is a few frames shorter than the segment's end is no reason to drop it).
TRUNCATION_TOLERANCE = 0.5


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


