"""Secrets and errors of the YouTube downloads (encodecmae.data.youtube): the cookie and proxy
values no message may show, and which of yt-dlp's failures are permanent."""

from __future__ import annotations

import os
import re
from pathlib import Path

COOKIES_ENV = "ENCODECMAE_YTDLP_COOKIES"
PROXY_ENV = "ENCODECMAE_YTDLP_PROXY"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class YoutubeDownloadError(RuntimeError):
    """A job that cannot run, or whose share of failed segments is too large."""


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

