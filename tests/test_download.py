"""Checksummed downloads, served from a local HTTP server (no test touches the internet)."""

from __future__ import annotations

import argparse
import hashlib

import pytest
from workflow_helpers import serve_directory

from encodecmae.data.download import (
    ENCODEC_24KHZ_SHA256_PREFIX,
    ENCODEC_24KHZ_URL,
    DownloadError,
    download,
    register,
    sha256_file,
)

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one 1-MiB read
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1 at a free port; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / f"weights-{DIGEST[:8]}.th").write_bytes(PAYLOAD)
    with serve_directory(root) as url:
        yield url


def test_good_download(server, tmp_path):
    out = tmp_path / "dl" / "weights.th"
    result = download(f"{server}/weights-{DIGEST[:8]}.th", out, sha256=DIGEST)
    assert result == out
    assert out.read_bytes() == PAYLOAD
    assert sha256_file(out) == DIGEST
    assert not (tmp_path / "dl" / "weights.th.partial").exists()


def test_prefix_check(server, tmp_path):
    url = f"{server}/weights-{DIGEST[:8]}.th"
    out = tmp_path / "weights.th"
    download(url, out, sha256_prefix=DIGEST[:8].upper())  # as in EnCodec checkpoint names
    assert out.read_bytes() == PAYLOAD
    out.unlink()
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(url, out, sha256_prefix=f"{(int(DIGEST[0], 16) + 1) % 16:x}{DIGEST[1:8]}")
    assert not out.exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url = f"{server}/weights-{DIGEST[:8]}.th"
    out = tmp_path / "weights.th"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError) as err:
        download(url, out, sha256=wrong)
    message = str(err.value)
    assert url in message and str(out) in message and wrong in message and DIGEST in message
    assert list(tmp_path.glob("weights.th*")) == []  # neither the file nor its .partial


def test_mismatch_does_not_replace_an_existing_file(server, tmp_path):
    out = tmp_path / "weights.th"
    out.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(f"{server}/weights-{DIGEST[:8]}.th", out, sha256="0" * 64)
    assert out.read_bytes() == b"old"


def test_http_404(server, tmp_path):
    url = f"{server}/missing.th"
    out = tmp_path / "missing.th"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(url, out, retries=3, backoff=0)
    assert url in str(err.value) and str(out) in str(err.value)
    assert list(tmp_path.glob("missing.th*")) == []


def test_connection_refused_is_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.th"
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download(url, tmp_path / "x.th", retries=2, backoff=0, timeout=5)
    assert list(tmp_path.glob("x.th*")) == []


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = download(src.as_uri(), tmp_path / "copy.bin", sha256=DIGEST)
    assert out.read_bytes() == PAYLOAD


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scheme"):
        download("ftp://example.org/x", tmp_path / "x")
    with pytest.raises(ValueError, match="hexadecimal"):
        download((tmp_path / "x").as_uri(), tmp_path / "y", sha256_prefix="not-hex")


def test_encodec_constants():
    assert ENCODEC_24KHZ_URL.endswith(f"encodec_24khz-{ENCODEC_24KHZ_SHA256_PREFIX}.th")


def test_command(server, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "w.th"
    args = parser.parse_args(["download", "--url", f"{server}/weights-{DIGEST[:8]}.th", "--out", str(out),
                              "--sha256-prefix", DIGEST[:8]])
    args.func(args)
    assert out.read_bytes() == PAYLOAD
    assert DIGEST in capsys.readouterr().out


def test_download_archives_verifies_and_unpacks_zip_and_tar(server, tmp_path):
    import tarfile
    import zipfile

    from encodecmae.data.download import DownloadError, download_archives, sha256_file

    base, root = server, tmp_path / "www"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.wav").write_bytes(b"RIFFaaaa")
    with zipfile.ZipFile(root / "music.zip", "w") as z:
        z.write(tmp_path / "src" / "a.wav", "fma/000/a.wav")
    with tarfile.open(root / "speech.tar.gz", "w:gz") as t:
        t.add(tmp_path / "src" / "a.wav", "small/book/b.wav")
    out = tmp_path / "downloads" / "mix"
    download_archives([(f"{base}/music.zip", sha256_file(root / "music.zip")), (f"{base}/speech.tar.gz", None)], out)
    assert (out / "fma" / "000" / "a.wav").read_bytes() == b"RIFFaaaa"
    assert (out / "small" / "book" / "b.wav").read_bytes() == b"RIFFaaaa"
    with pytest.raises(DownloadError, match="music.zip"):
        download_archives([(f"{base}/music.zip", "0" * 64)], tmp_path / "other")
    # a member that escapes the target directory is refused
    with zipfile.ZipFile(root / "evil.zip", "w") as z:
        z.writestr("../escape.wav", b"x")
    with pytest.raises(DownloadError, match="outside"):
        download_archives([(f"{base}/evil.zip", None)], tmp_path / "evil")
    assert not (tmp_path / "escape.wav").exists()
