"""Checksummed downloads (the pretrained EnCodec weights, and anything else fetched by URL).

The file is streamed to ``<out>.partial``, its SHA-256 checked, and only then renamed to
``<out>``: an interrupted or corrupted download never leaves a file that looks finished, so the
workflow engine (which decides from files whether a step is done) never sees one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from encodecmae.progress import Progress

ENCODEC_24KHZ_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
# EnCodec names its checkpoints after the first 8 hex digits of their SHA-256.
ENCODEC_24KHZ_SHA256_PREFIX = "d7cc33bc"

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not match its checksum; the message names URL and file."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1-MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_hex(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not value or any(c not in "0123456789abcdef" for c in value) or len(value) > 64:
        raise ValueError(f"{name} must be hexadecimal (at most 64 digits), got {value!r}")
    return value


def _fetch(url: str, partial: Path, timeout: float, desc: str) -> str:
    """Stream ``url`` into ``partial``, printing progress lines; return the SHA-256 hex digest."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(partial, "wb") as f:
        total = resp.headers.get("Content-Length")
        with Progress(desc, total=int(total) if total else None, unit="B", scale=True) as bar:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                f.write(block)
                h.update(block)
                bar.update(len(block))
    return h.hexdigest()


def download(url: str, out_path: str | Path, sha256: str | None = None, sha256_prefix: str | None = None,
             retries: int = 3, timeout: float = 60, backoff: float = 1.0) -> Path:
    """Download ``url`` (http, https or file) to ``out_path``, checking its SHA-256.

    ``sha256`` is the full hex digest; ``sha256_prefix`` a leading part of it, as EnCodec
    checkpoint names carry (``encodec_24khz-d7cc33bc.th``). Network errors and HTTP 5xx are
    retried ``retries`` times with exponential backoff; HTTP 4xx and a checksum mismatch are not.
    On any failure the partial file is deleted and DownloadError names the URL and the file.
    An existing ``out_path`` is overwritten: whether to download is the caller's decision.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r} (http, https or file)")
    sha256 = _check_hex("sha256", sha256)
    sha256_prefix = _check_hex("sha256_prefix", sha256_prefix)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    last_error: Exception | None = None
    for attempt in range(1, max(1, retries) + 1):
        try:
            digest = _fetch(url, partial, timeout, out.name)
            break
        except urllib.error.HTTPError as exc:
            partial.unlink(missing_ok=True)
            if exc.code < 500:  # the server's answer will not change on retry
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (downloading to {out})") from exc
            last_error = exc
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timeout, DNS, ...
            partial.unlink(missing_ok=True)
            last_error = exc
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    else:
        raise DownloadError(f"{url}: download to {out} failed after {retries} attempts ({last_error})")

    expected = sha256 or sha256_prefix
    if (sha256 and digest != sha256) or (sha256_prefix and not digest.startswith(sha256_prefix)):
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: checksum mismatch for {out}: expected sha256 {expected}..., got {digest}")
    os.replace(partial, out)  # atomic on one filesystem
    return out


def unpack(archive: str | Path, out_dir: str | Path) -> list[str]:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into ``out_dir``; refuses members that
    would land outside it. Returns the extracted member names."""
    import tarfile
    import zipfile

    archive, out_dir = Path(archive), Path(out_dir).resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            for n in names:
                if not (out_dir / n).resolve().is_relative_to(out_dir):
                    raise DownloadError(f"{archive}: member {n!r} would be written outside {out_dir}")
            z.extractall(out_dir)
        return names
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(out_dir, filter="data")  # the data filter rejects absolute and '..' paths
            return t.getnames()
    raise DownloadError(f"{archive}: not a zip or tar archive")


def download_archives(archives: list[tuple[str, str | None]], out_dir: str | Path) -> Path:
    """Download each (url, sha256) archive, verify it and unpack it into ``out_dir``.

    Archives are kept under ``out_dir/.archives`` so an interrupted source download resumes at
    the first archive not yet fetched (each one is verified again by its checksum).
    """
    out_dir = Path(out_dir)
    store = out_dir / ".archives"
    for url, sha in archives:
        name = url.rstrip("/").rsplit("/", 1)[-1] or "archive"
        path = store / name
        if not path.exists() or (sha and sha256_file(path) != sha.lower()):
            download(url, path, sha256=sha)
        elif not sha:
            print(f"{path}: kept from an earlier run (no checksum given to verify it)")
        members = unpack(path, out_dir)
        print(f"{url}: {len(members)} members unpacked into {out_dir}")
    return out_dir


def register(sub) -> None:
    p = sub.add_parser("download", help="download a file by URL and verify its SHA-256")
    p.add_argument("--url", required=True,
                   help=f"http(s):// or file:// URL (pretrained EnCodec: {ENCODEC_24KHZ_URL})")
    p.add_argument("--out", required=True, help="file to write (replaced atomically once verified)")
    p.add_argument("--sha256", default=None, help="expected full SHA-256 hex digest")
    p.add_argument("--sha256-prefix", default=None,
                   help=f"expected leading hex digits of the SHA-256 (EnCodec: {ENCODEC_24KHZ_SHA256_PREFIX})")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("download-archives", help="download, verify and unpack archives into a directory")
    p.add_argument("--archive", nargs=2, action="append", required=True, metavar=("URL", "SHA256"),
                   help="an archive and its SHA-256 ('-' when none is known); repeat for several")
    p.add_argument("--out", required=True, help="directory to unpack into")
    p.set_defaults(func=cmd_download_archives)


def cmd_download(args: argparse.Namespace) -> None:
    out = download(args.url, args.out, sha256=args.sha256, sha256_prefix=args.sha256_prefix)
    print(f"{out}: {out.stat().st_size} bytes, sha256 {sha256_file(out)}")


def cmd_download_archives(args: argparse.Namespace) -> None:
    download_archives([(url, None if digest == "-" else digest) for url, digest in args.archive], args.out)
