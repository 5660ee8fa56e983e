"""Checksummed downloads, served from a local HTTP server (no test touches the internet)."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time

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


@pytest.mark.parametrize("algo", ["md5", "sha1", "sha256"])
def test_published_checksums_of_each_kind(server, tmp_path, algo):
    """Datasets publish MD5 (OpenSLR, Libri-Light, Zenodo), SHA-1 (FMA) or SHA-256."""
    from encodecmae.data.download import parse_checksum

    url = f"{server}/weights-{DIGEST[:8]}.th"
    good = f"{algo}:{hashlib.new(algo, PAYLOAD).hexdigest().upper()}"
    assert parse_checksum(good) == (algo, hashlib.new(algo, PAYLOAD).hexdigest())
    out = download(url, tmp_path / "ok.th", checksum=good)
    assert out.read_bytes() == PAYLOAD
    bad = f"{algo}:{'0' * len(hashlib.new(algo).hexdigest())}"
    with pytest.raises(DownloadError, match=f"expected {algo} 0+, got {hashlib.new(algo, PAYLOAD).hexdigest()}"):
        download(url, tmp_path / "bad.th", checksum=bad)
    assert not (tmp_path / "bad.th").exists() and not (tmp_path / "bad.th.partial").exists()


def test_malformed_checksums_are_refused_before_downloading():
    from encodecmae.data.download import parse_checksum

    assert parse_checksum(None) is None and parse_checksum("-") is None
    assert parse_checksum(DIGEST) == ("sha256", DIGEST)  # a bare digest is a SHA-256
    for bad, why in [("crc32:1234abcd", "unknown algorithm"), ("md5:abc", "32 hexadecimal"),
                     (f"sha1:{'g' * 40}", "40 hexadecimal")]:
        with pytest.raises(ValueError, match=why):
            parse_checksum(bad)


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


# --- resuming ----------------------------------------------------------------------------------

BIG = bytes(range(251)) * 20_000  # 5 MB, 77 blocks of 64 KiB
BIG_DIGEST = hashlib.sha256(BIG).hexdigest()


@pytest.fixture
def big_server(tmp_path):
    from workflow_helpers import file_server

    root = tmp_path / "www"
    root.mkdir()
    (root / "big.bin").write_bytes(BIG)
    with file_server(root) as httpd:
        yield httpd


def test_a_connection_cut_mid_way_is_continued_with_a_range_request(big_server, tmp_path):
    big_server.cut_after = 1_500_000
    out = download(f"{big_server.url}/big.bin", tmp_path / "big.bin", sha256=BIG_DIGEST, backoff=0)
    assert out.read_bytes() == BIG
    assert big_server.log == [("/big.bin", None), ("/big.bin", "bytes=1500000-")]
    assert list(tmp_path.glob("big.bin.partial*")) == []


def test_a_server_without_ranges_or_a_changed_file_starts_over(big_server, tmp_path):
    out = tmp_path / "big.bin"
    for setting in ("no ranges", "changed file"):
        big_server.log.clear()
        big_server.cut_after, big_server.cuts = 1_000_000, 1
        with pytest.raises(DownloadError, match="is kept and a rerun continues it"):
            download(f"{big_server.url}/big.bin", out, retries=1)
        assert (tmp_path / "big.bin.partial").stat().st_size == 1_000_000
        if setting == "no ranges":
            big_server.ranges = False
        else:
            big_server.ranges = True
            www = tmp_path / "www" / "big.bin"
            os.utime(www, (www.stat().st_atime, www.stat().st_mtime + 10))  # If-Range no longer matches
        download(f"{big_server.url}/big.bin", out, sha256=BIG_DIGEST)
        assert out.read_bytes() == BIG
        assert big_server.log[-1] == ("/big.bin", "bytes=1000000-")  # asked, but got the whole file
        out.unlink()


def test_a_killed_download_job_is_continued_by_the_next(big_server, tmp_path):
    """`encodecmae download` killed mid-way (SIGKILL: no clean-up) leaves its partial file; the
    rerun asks for the rest and ends with the same bytes as an uninterrupted download."""
    big_server.delay = 0.05  # ~1.3 MB/s: the job is still running when it is killed
    out = tmp_path / "dl" / "big.bin"
    partial = tmp_path / "dl" / "big.bin.partial"
    cmd = [sys.executable, "-m", "encodecmae", "download", "--url", f"{big_server.url}/big.bin",
           "--out", str(out), "--sha256", BIG_DIGEST]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not partial.exists() or partial.stat().st_size < 1_000_000):
        time.sleep(0.05)
    job.kill()
    job.wait()
    have = partial.stat().st_size
    assert 1_000_000 <= have < len(BIG) and not out.exists()
    big_server.delay = 0.0
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.read_bytes() == BIG and not partial.exists()
    assert big_server.log[-1] == ("/big.bin", f"bytes={have}-")


def test_download_archives_keeps_its_archives_outside_the_output(big_server, tmp_path):
    """The workflow's download_source: a killed job's output directory is deleted (as Snakemake
    does), its partial archive in the cache is not, and the rerun continues it."""
    import tarfile

    from encodecmae.data.download import download_archives

    www = tmp_path / "www"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "noise.bin").write_bytes(BIG)
    with tarfile.open(www / "corpus.tar", "w") as t:
        t.add(tmp_path / "src" / "noise.bin", "corpus/noise.bin")
    out, cache = tmp_path / "downloads" / "corpus", tmp_path / "download_cache" / "corpus"
    url = f"{big_server.url}/corpus.tar"
    big_server.cut_after, big_server.cuts = 1_000_000, 3  # every attempt of the job is cut off
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download_archives([(url, sha256_file(www / "corpus.tar"))], out, cache)
    assert (cache / "corpus.tar.partial").stat().st_size == 3_000_000  # each attempt continued the last
    shutil.rmtree(out, ignore_errors=True)  # Snakemake deletes a failed job's output
    download_archives([(url, sha256_file(www / "corpus.tar"))], out, cache)
    assert (out / "corpus" / "noise.bin").read_bytes() == BIG
    assert big_server.log[1:] == [("/corpus.tar", f"bytes={n}-") for n in (1_000_000, 2_000_000, 3_000_000)]
    assert not list(out.glob(".archives")) and (cache / "corpus.tar").exists()
