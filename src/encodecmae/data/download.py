"""Checksummed, resumable downloads (the pretrained EnCodec weights, the released models, the
corpora's archives: anything fetched by URL).

The file is streamed to ``<out>.partial``, its SHA-256 checked, and only then renamed to
``<out>``: an interrupted or corrupted download never leaves a file that looks finished, so the
workflow engine (which decides from files whether a step is done) never sees one. An
interrupted download keeps its ``.partial`` (and a ``.partial.json`` naming the URL and the
server's size and validator) and continues from its last byte with an HTTP Range request, in
the same job (retries) or the next one; a server that ignores the range, or a file that changed
on it, starts the download over.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from encodecmae.progress import Progress
from encodecmae.provenance import file_digest, sha256_file  # noqa: F401 (sha256_file re-exported)

ENCODEC_24KHZ_URL = "https://dl.fbaipublicfiles.com/encodec/v0/encodec_24khz-d7cc33bc.th"
# EnCodec names its checkpoints after the first 8 hex digits of their SHA-256.
ENCODEC_24KHZ_SHA256_PREFIX = "d7cc33bc"

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not match its checksum; the message names URL and file."""


# What dataset maintainers publish: SHA-256 (ours, Hugging Face), SHA-1 (FMA), MD5 (OpenSLR,
# Libri-Light, Zenodo).
ALGORITHMS = {"sha256": 64, "sha1": 40, "md5": 32}


def parse_checksum(value: str | None) -> tuple[str, str] | None:
    """``"md5:HEX"``, ``"sha1:HEX"``, ``"sha256:HEX"`` or a bare 64-digit SHA-256 -> (algorithm,
    lower-case hex); None or ``"-"`` -> None."""
    if value is None or value.strip() in ("", "-"):
        return None
    algo, sep, digest = value.strip().partition(":")
    if not sep:
        algo, digest = "sha256", value.strip()
    algo, digest = algo.lower(), digest.lower()
    if algo not in ALGORITHMS:
        raise ValueError(f"checksum {value!r}: unknown algorithm {algo!r} (one of {', '.join(ALGORITHMS)})")
    if len(digest) != ALGORITHMS[algo] or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum {value!r}: a {algo} digest is {ALGORITHMS[algo]} hexadecimal digits")
    return algo, digest


def _check_hex(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not value or any(c not in "0123456789abcdef" for c in value) or len(value) > 64:
        raise ValueError(f"{name} must be hexadecimal (at most 64 digits), got {value!r}")
    return value


def _fetch(url: str, partial: Path, timeout: float, desc: str, algos: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Stream ``url`` into ``partial``, continuing it when it holds the start of the same file;
    print progress lines; return the hex digests (``algos``) of the whole file."""
    meta_path = partial.with_name(partial.name + ".json")
    have = partial.stat().st_size if partial.exists() else 0
    meta = json.loads(meta_path.read_text()) if have and meta_path.exists() else {}
    request = urllib.request.Request(url)
    resumable = have > 0 and meta.get("url") == url and urllib.parse.urlsplit(url).scheme in ("http", "https")
    if resumable:
        request.add_header("Range", f"bytes={have}-")
        if meta.get("validator"):  # the server sends the whole file if it changed since
            request.add_header("If-Range", meta["validator"])
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and resumable:  # the partial file is no prefix the server can continue
            partial.unlink()
            return _fetch(url, partial, timeout, desc, algos)
        raise
    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        hashes = [hashlib.new(a) for a in algos]
        if resumable and status == 206 and m and int(m[1]) == have and str(meta.get("size")) in (m[2], "None"):
            with open(partial, "rb") as f:  # the bytes already there count in the digest
                for block in iter(lambda: f.read(_CHUNK), b""):
                    for h in hashes:
                        h.update(block)
            mode, total = "ab", int(m[2]) if m[2] != "*" else None
            print(f"{desc}: resuming at byte {have} of {total or 'unknown'}", flush=True)
        else:
            mode, have = "wb", 0
            total = int(length) if length else None
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        meta_path.write_text(json.dumps({"url": url, "size": total, "validator": validator}))
        done = have
        with open(partial, mode) as f, Progress(desc, total=total, unit="B", scale=True) as bar:
            bar.update(have)
            for block in iter(lambda: resp.read(_CHUNK), b""):
                f.write(block)
                for h in hashes:
                    h.update(block)
                done += len(block)
                bar.update(len(block))
    if total is not None and done != total:  # the connection closed early: resume on the next try
        raise OSError(f"connection closed after {done} of {total} bytes")
    return {a: h.hexdigest() for a, h in zip(algos, hashes)}


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)


def download(url: str, out_path: str | Path, sha256: str | None = None, sha256_prefix: str | None = None,
             retries: int = 3, timeout: float = 60, backoff: float = 1.0, checksum: str | None = None) -> Path:
    """Download ``url`` (http, https or file) to ``out_path``, checking its checksum.

    ``sha256`` is the full hex digest; ``sha256_prefix`` a leading part of it, as EnCodec
    checkpoint names carry (``encodec_24khz-d7cc33bc.th``); ``checksum`` the digest a dataset
    publishes, ``"md5:HEX"``, ``"sha1:HEX"`` or ``"sha256:HEX"`` (see parse_checksum). The
    file's SHA-256 is printed either way, for the record. Network errors, early ends and HTTP
    5xx are retried ``retries`` times with exponential backoff, each retry continuing the partial
    file (HTTP Range); a failed job leaves it for the next one to continue. HTTP 4xx and a
    checksum mismatch are not retried and delete the partial file. On failure DownloadError names
    the URL and the file. An existing ``out_path`` is overwritten: whether to download is the
    caller's decision.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{url}: unsupported URL scheme {scheme!r} (http, https or file)")
    sha256 = _check_hex("sha256", sha256)
    sha256_prefix = _check_hex("sha256_prefix", sha256_prefix)
    published = parse_checksum(checksum)
    algos = ("sha256",) + ((published[0],) if published and published[0] != "sha256" else ())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    last_error: Exception | None = None
    for attempt in range(1, max(1, retries) + 1):
        try:
            digests = _fetch(url, partial, timeout, out.name, algos)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # the server's answer will not change on retry
                _discard(partial)
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (downloading to {out})") from exc
            last_error = exc
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timeout, DNS, early end, ...
            last_error = exc
        if attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
    else:
        kept = f"; {partial} ({partial.stat().st_size} bytes) is kept and a rerun continues it" if partial.exists() else ""
        raise DownloadError(f"{url}: download to {out} failed after {retries} attempts ({last_error}){kept}")

    digest = digests["sha256"]
    expected = sha256 or sha256_prefix
    if (sha256 and digest != sha256) or (sha256_prefix and not digest.startswith(sha256_prefix)):
        _discard(partial)
        raise DownloadError(f"{url}: checksum mismatch for {out}: expected sha256 {expected}..., got {digest}")
    if published and digests[published[0]] != published[1]:
        _discard(partial)
        raise DownloadError(f"{url}: checksum mismatch for {out}: expected {published[0]} {published[1]}, "
                            f"got {digests[published[0]]}")
    print(f"{out.name}: sha256 {digest}" + (f", {published[0]} {published[1]} as published" if published else ""),
          flush=True)
    os.replace(partial, out)  # atomic on one filesystem
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)
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


def download_archives(archives: list[tuple[str, str | None]], out_dir: str | Path,
                      cache_dir: str | Path | None = None) -> Path:
    """Download each (url, checksum) archive, verify it and unpack it into ``out_dir``. The
    checksum is a bare SHA-256 or ``"md5:HEX"`` / ``"sha1:HEX"`` / ``"sha256:HEX"``, or None.

    Archives are kept in ``cache_dir`` (default ``out_dir/.archives``), which the workflow puts
    outside the rule's output, so that a killed job's partial archive survives Snakemake deleting
    the output: the next run continues it, and an archive already complete is only verified again
    by its checksum and unpacked.
    """
    out_dir = Path(out_dir)
    store = Path(cache_dir) if cache_dir else out_dir / ".archives"
    for url, checksum in archives:
        published = parse_checksum(checksum)
        name = url.rstrip("/").rsplit("/", 1)[-1] or "archive"
        path = store / name
        if not path.exists() or (published and file_digest(path, published[0]) != published[1]):
            download(url, path, checksum=checksum)
        elif not published:
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
    p.add_argument("--checksum", default=None,
                   help="expected checksum as published: md5:HEX, sha1:HEX or sha256:HEX ('-': none)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("download-archives", help="download, verify and unpack archives into a directory")
    p.add_argument("--archive", nargs=2, action="append", required=True, metavar=("URL", "CHECKSUM"),
                   help="an archive and its checksum (a SHA-256, or md5:HEX / sha1:HEX / sha256:HEX; '-' when "
                        "none is known); repeat for several")
    p.add_argument("--out", required=True, help="directory to unpack into")
    p.add_argument("--cache", default=None,
                   help="directory that keeps the archives, complete and partial (default: OUT/.archives)")
    p.set_defaults(func=cmd_download_archives)


def cmd_download(args: argparse.Namespace) -> None:
    out = download(args.url, args.out, sha256=args.sha256, sha256_prefix=args.sha256_prefix, checksum=args.checksum)
    print(f"{out}: {out.stat().st_size} bytes, sha256 {sha256_file(out)}")


def cmd_download_archives(args: argparse.Namespace) -> None:
    download_archives([(url, None if checksum == "-" else checksum) for url, checksum in args.archive], args.out,
                      args.cache)
