"""The AudioSet downloader (encodecmae.data.youtube) against a local HTTP server of WAV files.

yt-dlp's generic extractor takes a direct media URL, so ``http://127.0.0.1:PORT/media/{ytid}.wav``
stands in for YouTube; the server's behaviour per ytid (see MediaHandler) plays removed videos,
rate limiting, cut transfers and stalls. Nothing here reaches the internet.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import re
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from encodecmae.cli import main as cli_main
from encodecmae.data import youtube as yt
from encodecmae.data import youtube_fetch as fetch
from encodecmae.data.youtube import (
    LEDGER_COLUMNS,
    STATUS_COLUMNS,
    YoutubeDownloadError,
    classify_error,
    download_part,
    part_segments,
    read_segment_lists,
    scrub,
)

MEDIA_SR = 48_000
MEDIA_SECONDS = 15


def step_freq(second: int) -> float:
    """The media's tone frequency during second ``second`` (a new one each second)."""
    return 400.0 + 150.0 * second


def make_media() -> bytes:
    """15 s of stereo 48-kHz WAV: a tone whose frequency steps up every second (continuous phase)."""
    t = np.arange(MEDIA_SECONDS * MEDIA_SR) / MEDIA_SR
    freq = step_freq(np.floor(t))
    phase = 2 * np.pi * np.cumsum(freq) / MEDIA_SR
    wav = 0.4 * np.sin(phase)
    buf = io.BytesIO()
    sf.write(buf, np.stack([wav, 0.5 * wav], axis=1), MEDIA_SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


MEDIA = make_media()
HEADER = 44  # soundfile's PCM WAV header
BYTES_PER_SECOND = MEDIA_SR * 2 * 2


class MediaHandler(http.server.BaseHTTPRequestHandler):
    """Serves MEDIA at /media/{ytid}.wav (single ranges ``bytes=N-[M]``), behaving per ytid as
    ``server.modes`` says (default "ok"):

    gone: 404 · busy-once: 429 on the first request, then ok · error: 503 · cut: the body stops at
    about 1 s into the file's 4th second although Content-Length promised all · stall: headers,
    then nothing · trickle: one byte every 0.2 s (no read ever waits long).

    Requests are logged in ``server.log`` as dicts (ytid, time, range, proxied, cookie); proxy
    requests (absolute URI) are served like direct ones, so the server is its own proxy.
    """

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        proxied = self.path.startswith("http://")
        path = urllib.parse.urlsplit(self.path).path
        ytid = Path(path).stem
        with server.lock:
            server.hits[ytid] += 1
            hits = server.hits[ytid]
            server.log.append({"ytid": ytid, "time": time.monotonic(), "range": self.headers.get("Range"),
                               "proxied": proxied, "cookie": self.headers.get("Cookie")})
        mode = server.modes.get(ytid, "ok")
        if not path.startswith("/media/") or mode == "gone":
            self.send_error(404)
            return
        if mode == "error" or (mode == "busy-once" and hits == 1):
            self.send_error(503 if mode == "error" else 429)
            return
        data, start, end = MEDIA, 0, len(MEDIA) - 1
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            start, end = int(m[1]), min(int(m[2]) if m[2] else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        try:
            if mode == "stall":
                self.wfile.flush()
                server.stop.wait(30)
            elif mode == "trickle":
                for i in range(start, end + 1):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    if server.stop.wait(0.2):
                        break
            else:
                stop = end + 1 if mode != "cut" else min(end + 1, HEADER + int(4.0 * BYTES_PER_SECOND))
                for i in range(start, stop, 1 << 16):
                    self.wfile.write(data[i : min(i + (1 << 16), stop)])
        except OSError:  # the client hung up (yt-dlp's extractor reads no body)
            pass
        self.close_connection = True


@contextlib.contextmanager
def media_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MediaHandler)
    httpd.daemon_threads = True
    httpd.modes, httpd.log, httpd.hits = {}, [], Counter()
    httpd.lock, httpd.stop = threading.Lock(), threading.Event()
    httpd.port = httpd.server_address[1]
    httpd.url_template = f"http://127.0.0.1:{httpd.port}/media/{{ytid}}.wav"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.stop.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    with media_server() as httpd:
        yield httpd


@pytest.fixture(autouse=True)
def no_secrets_env(monkeypatch):
    monkeypatch.delenv(yt.COOKIES_ENV, raising=False)
    monkeypatch.delenv(yt.PROXY_ENV, raising=False)


def segs(*rows) -> pd.DataFrame:
    return pd.DataFrame([(y, float(s), float(e), "/m/x") for y, s, e in rows],
                        columns=["ytid", "start", "end", "labels"])


def run(server, table, tmp_path, **kw):
    kw = {"parallel": 4, "retries": 2, "backoff": 0.05, "timeout": 20.0, **kw}
    return download_part(table, tmp_path / "audio", tmp_path / "status.tsv", url_template=server.url_template, **kw)


def status(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "status.tsv", sep="\t", dtype={"ytid": str}, keep_default_na=False)


def ledger(tmp_path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "audio" / "status.tsv", sep="\t", dtype={"ytid": str}, keep_default_na=False)


def by_id(table: pd.DataFrame) -> dict:
    return {r.ytid: r for r in table.itertuples(index=False)}


def media_requests(server, ytids=None) -> list:
    return [e for e in server.log if ytids is None or e["ytid"] in ytids]


# ----------------------------------------------------------------------------- segment lists


OFFICIAL = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
--aE2O5G5WE, 0.000, 10.000, "/m/03fwl,/m/04rlf,/m/09x0r"
"""


def test_read_segment_lists_official_format(tmp_path):
    a, b = tmp_path / "balanced.csv", tmp_path / "eval.csv"
    a.write_text(OFFICIAL)
    b.write_text("# c\n# c\n# c\nzz_9-Ab, 1.5, 11.5, \"/m/1\"\n--PJHxphWEs, 30.000, 40.000, \"/m/other\"\n")
    table = read_segment_lists([b, a])
    assert list(table.columns) == ["ytid", "start", "end", "labels"]
    # order of the files kept; the repeated (ytid, start) dropped (the first kept)
    assert table["ytid"].tolist() == ["zz_9-Ab", "--PJHxphWEs", "--ZhevVpy1s", "--aE2O5G5WE"]
    assert table.loc[1, "labels"] == "/m/other"
    first = read_segment_lists([a]).iloc[0]
    assert (first.ytid, first.start, first.end, first.labels) == ("--PJHxphWEs", 30.0, 40.0, "/m/09x0r,/t/dd00088")
    assert read_segment_lists([]).empty


@pytest.mark.parametrize("row, message", [
    ('abc, 1.0, "/m/x"', "expected 4 fields"),
    ('abc, one, 2.0, "/m/x"', "must be seconds"),
    ('abc, 5.0, 2.0, "/m/x"', "start < end"),
    ('../x, 1.0, 2.0, "/m/x"', "invalid YouTube id"),
])
def test_read_segment_lists_names_file_and_line_of_a_malformed_row(tmp_path, row, message):
    f = tmp_path / "bad.csv"
    f.write_text(OFFICIAL + row + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{f}:7: ") + ".*" + re.escape(message)):
        read_segment_lists([f])


def test_part_segments_slices_and_the_last_part_takes_the_rest():
    table = segs(*[(f"id{i}", i, i + 10) for i in range(10)])
    assert part_segments(table, 0, 4)["ytid"].tolist() == ["id0", "id1", "id2", "id3"]
    assert part_segments(table, 1, 4)["ytid"].tolist() == ["id4", "id5", "id6", "id7"]
    assert part_segments(table, 2, 4)["ytid"].tolist() == ["id8", "id9"]
    # planned 2 parts of 4 from a count of 8: the last planned part also takes rows 8 and 9
    assert part_segments(table, 1, 4, last=True)["ytid"].tolist() == ["id4", "id5", "id6", "id7", "id8", "id9"]
    assert part_segments(table, 5, 4).empty and part_segments(table, 5, 4, last=True).empty
    with pytest.raises(ValueError):
        part_segments(table, -1, 4)


def test_classify_error_messages():
    cases = {
        "[youtube] abc: Private video. Sign in if you've been granted access to this video": ("unavailable", "private"),
        "[youtube] abc: Video unavailable. This video has been removed by the uploader": ("unavailable", "removed"),
        "[youtube] abc: Video unavailable": ("unavailable", "unavailable"),
        "[youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.":
            ("unavailable", "age-restricted"),
        "[youtube] abc: Video unavailable. This video contains content from X, who has blocked it on copyright grounds":
            ("unavailable", "copyright"),
        "[youtube] abc: The uploader has not made this video available in your country": ("unavailable", "blocked"),
        "[youtube] abc: Join this channel to get access to members-only content like this video": (
            "unavailable", "members-only"),
        "[youtube] abc: Sign in to confirm you're not a bot. Use --cookies": ("failed", "bot-check"),
        "Unable to download webpage: <urlopen error [Errno 111] Connection refused>": ("failed", "network"),
        "Unable to download webpage: The read operation timed out": ("failed", "timeout"),
        "Requested format is not available. Use --list-formats": ("failed", "no-format"),
        "something nobody has seen before": ("failed", "error"),
    }
    for message, expected in cases.items():
        assert classify_error(message) == expected, message
    assert classify_error("Unable to download webpage: HTTP Error 404: Not Found", 404) == ("unavailable", "http-404")
    assert classify_error("HTTP Error 410", 410) == ("unavailable", "http-410")
    # a throttled or blocked address, or an expired media URL: retried, never given up for good
    assert classify_error("HTTP Error 403: Forbidden", 403) == ("failed", "http-403")
    assert classify_error("HTTP Error 429: Too Many Requests", 429) == ("failed", "http-429")
    assert classify_error("HTTP Error 502", 502) == ("failed", "http-502")


def test_scrub_removes_proxy_credentials_and_cookie_values(tmp_path, monkeypatch):
    cookies = tmp_path / "my-cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tverysecretcookie42\n")
    monkeypatch.setenv(yt.COOKIES_ENV, str(cookies))
    monkeypatch.setenv(yt.PROXY_ENV, "http://alice:hunter22pw@proxy.example:3128")
    text = (f"via http://alice:hunter22pw@proxy.example:3128 with {cookies}: Cookie SID=verysecretcookie42; "
            "password hunter22pw")
    clean = scrub(text)
    for secret in ("hunter22pw", "verysecretcookie42", str(cookies), "proxy.example", "alice"):
        assert secret not in clean
    assert clean.startswith("via *** with ***")


def test_yt_dlp_warnings_are_scrubbed_and_not_repeated_without_end(monkeypatch, capsys):
    monkeypatch.setenv(yt.PROXY_ENV, "http://bob:s3cretpass@proxy.example:8080")
    secrets, seen, lock = yt._secret_values(), Counter(), threading.Lock()
    for ytid in ("aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"):
        logger = fetch._YdlLogger(fetch._Segment(ytid, 0.0, 10.0, yt.segment_name(ytid, 0.0)), secrets, seen, lock)
        logger.warning(f"[youtube] {ytid}: no JavaScript runtime\t(proxy http://bob:s3cretpass@proxy.example:8080)")
        logger.debug("noise")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "repeats of this warning are not shown" in err[-1]
    assert err[0] == "aaaaaaaaaaa_00000000: yt-dlp: [youtube] aaaaaaaaaaa: no JavaScript runtime (proxy ***)"


def test_rate_limit_parsing():
    assert yt._parse_rate(None) is None and yt._parse_rate("") is None
    assert yt._parse_rate("2M") == 2 * 1024**2 and yt._parse_rate("500K") == 500 * 1024
    assert yt._parse_rate(1000) == 1000
    with pytest.raises(ValueError):
        yt._parse_rate("fast")


# ----------------------------------------------------------------------------- downloads


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_a_segment_is_its_section_as_24khz_mono_flac(server, tmp_path):
    summary = run(server, segs(("--tone_A1", 3.5, 8.5), ("tone_B", 10.0, 14.0)), tmp_path)
    assert summary["states"] == {"downloaded": 2, "unavailable": 0, "failed": 0}
    flac = tmp_path / "audio" / "--tone_A1_00003500.flac"
    info = sf.info(flac)
    assert (info.samplerate, info.channels, info.format) == (24_000, 1, "FLAC")
    assert abs(info.duration - 5.0) < 0.05
    assert abs(sf.info(tmp_path / "audio" / "tone_B_00010000.flac").duration - 4.0) < 0.05
    wav, sr = sf.read(flac)
    # the cut starts at 3.5 s: half a second of second 3's tone, then second 4's, ...; the end is 8.5 s
    assert abs(dominant_freq(wav[: int(0.4 * sr)], sr) - step_freq(3)) < 10
    assert abs(dominant_freq(wav[int(0.6 * sr) : int(1.4 * sr)], sr) - step_freq(4)) < 10
    assert abs(dominant_freq(wav[-int(0.4 * sr) :], sr) - step_freq(8)) < 10
    # only the section was fetched: the requests' ranges start inside the file, not at its start
    ranges = [e["range"] for e in media_requests(server, {"--tone_A1"}) if e["range"]]
    assert any(int(re.match(r"bytes=(\d+)", r)[1]) >= HEADER + 3 * BYTES_PER_SECOND for r in ranges), ranges

    table = status(tmp_path)
    assert list(table.columns) == STATUS_COLUMNS and list(ledger(tmp_path).columns) == LEDGER_COLUMNS
    row = by_id(table)["--tone_A1"]
    assert (row.state, row.reason, row.attempts) == ("downloaded", "ok", 1)
    assert (f"{row.start:.3f}", f"{row.end:.3f}") == ("3.500", "8.500")
    assert abs(row.seconds - 5.0) < 0.05
    assert summary["hours"] == pytest.approx(9.0 / 3600, abs=1e-4)
    assert not list((tmp_path / "audio").glob(".tmp-*")), "temporary files left behind"


def test_removed_rate_limited_and_rerun_downloads_nothing_new(server, tmp_path, capsys):
    server.modes.update({"gone_video": "gone", "busy_video": "busy-once"})
    table = segs(("ok_video", 1.0, 4.0), ("gone_video", 0.0, 3.0), ("busy_video", 2.0, 5.0))
    summary = run(server, table, tmp_path)
    rows = by_id(status(tmp_path))
    assert (rows["ok_video"].state, rows["ok_video"].attempts) == ("downloaded", 1)
    assert (rows["gone_video"].state, rows["gone_video"].reason) == ("unavailable", "http-404")
    assert "404" in rows["gone_video"].detail
    # 429, then success on the retry within the run
    assert (rows["busy_video"].state, rows["busy_video"].attempts) == ("downloaded", 2)
    assert len(media_requests(server, {"gone_video"})) == 1, "a removed video is not retried"
    assert summary["reasons"] == {"downloaded/ok": 2, "unavailable/http-404": 1}
    out = capsys.readouterr()
    assert "3 segments: downloaded 2 (ok 2); unavailable 1 (http-404 1); failed 0; audio 0.00 h (0:00:06)" in out.out
    assert re.search(r"download-youtube status: 3/3 segment \(100%\)", out.err)  # the Progress line

    server.log.clear()
    first = (tmp_path / "status.tsv").read_text()
    again = run(server, table, tmp_path)
    assert media_requests(server) == [], "a rerun requests nothing for finished or unavailable segments"
    assert again["states"] == summary["states"] and again["new_hours"] == 0
    assert (tmp_path / "status.tsv").read_text() == first
    # the ledger has one line per segment and run that finished it (the rerun added none)
    assert len(ledger(tmp_path)) == 3


def test_truncated_transfer_fails_then_downloads_on_rerun(server, tmp_path):
    server.modes["cut_video"] = "cut"  # Content-Length promises all, the body stops at 4.0 s
    # a section the cut shortens, one it leaves without any audio, one of a file served whole
    table = segs(("cut_video", 3.0, 8.0), ("cut_video", 5.0, 8.0), ("fine_video", 3.0, 8.0))
    summary = run(server, table, tmp_path, retries=1, max_failed_fraction=1.0)
    assert summary["states"] == {"downloaded": 1, "unavailable": 0, "failed": 2}
    for row in status(tmp_path).itertuples():
        if row.ytid == "cut_video":
            assert row.state == "failed" and row.reason in ("truncated", "network"), row
            assert row.attempts == 2 and row.seconds == 0
    assert sorted(p.name for p in (tmp_path / "audio").glob("*.flac")) == ["fine_video_00003000.flac"]

    server.modes["cut_video"] = "ok"
    server.log.clear()
    summary = run(server, table, tmp_path)
    assert summary["states"]["downloaded"] == 3
    assert {e["ytid"] for e in media_requests(server)} == {"cut_video"}
    for row in status(tmp_path).itertuples():
        assert row.state == "downloaded" and row.attempts == (3 if row.ytid == "cut_video" else 1)  # across runs
    assert abs(sf.info(tmp_path / "audio" / "cut_video_00003000.flac").duration - 5.0) < 0.05
    assert abs(sf.info(tmp_path / "audio" / "cut_video_00005000.flac").duration - 3.0) < 0.05


def test_a_rerun_goes_by_the_ledger_and_the_files(server, tmp_path):
    """What a killed job leaves: lines of several runs (the last per segment wins), a repeated
    header (jobs sharing the file), a cut last line; and a FLAC finished just before the kill
    without its ledger line."""
    audio = tmp_path / "audio"
    audio.mkdir()
    header = "\t".join(LEDGER_COLUMNS)
    (audio / "status.tsv").write_text("\n".join([
        header,
        "seg_unavail\t0.000\t2.000\tunavailable\tprivate\tPrivate video\t1",
        "seg_failed\t0.000\t2.000\tfailed\thttp-429\tHTTP Error 429\t3",
        "seg_lost\t0.000\t2.000\tdownloaded\tok\t\t1",  # its FLAC is gone: downloaded again
        "seg_flip\t0.000\t2.000\tunavailable\tremoved\tgone\t1",
        header,
        "seg_flip\t0.000\t2.000\tfailed\tnetwork\treset\t2",  # the later line wins: tried again
        "seg_partial\t0.000\t2.0",  # no newline: a line the killed job did not finish
    ]))
    sf.write(audio / "seg_disk_00000000.flac", np.zeros(48_000, dtype=np.float32), 24_000)
    names = ["seg_unavail", "seg_failed", "seg_lost", "seg_flip", "seg_partial", "seg_disk"]
    summary = run(server, segs(*[(n, 0.0, 2.0) for n in names]), tmp_path)
    assert {e["ytid"] for e in media_requests(server)} == {"seg_failed", "seg_lost", "seg_flip", "seg_partial"}
    rows = by_id(status(tmp_path))
    assert (rows["seg_unavail"].state, rows["seg_unavail"].reason, rows["seg_unavail"].attempts) == (
        "unavailable", "private", 1)
    assert (rows["seg_disk"].state, rows["seg_disk"].seconds) == ("downloaded", 2.0)
    assert [rows[n].attempts for n in ("seg_failed", "seg_lost", "seg_flip", "seg_partial")] == [4, 2, 3, 1]
    assert summary["states"] == {"downloaded": 5, "unavailable": 1, "failed": 0}
    # the rerun's lines follow the cut one without joining it
    last = yt.read_ledger(audio / "status.tsv")
    again = ("seg_failed", "seg_lost", "seg_flip", "seg_partial")
    assert {ytid: row["state"] for (ytid, _), row in last.items()} == {
        "seg_unavail": "unavailable", **{n: "downloaded" for n in again}}
    assert (audio / "status.tsv").read_text().splitlines()[8].startswith("seg_"), "a line the rerun wrote"


def test_stalled_and_trickling_servers_time_out_then_download_on_rerun(server, tmp_path):
    """A stall (headers, then silence) and a trickle (a byte every 0.2 s, which no read timeout
    catches) both end as failed/timeout within about the timeout, in parallel."""
    server.modes.update({"stall_video": "stall", "slow_video": "trickle"})
    table = segs(("stall_video", 1.0, 5.0), ("slow_video", 1.0, 5.0))
    t0 = time.monotonic()
    run(server, table, tmp_path, timeout=2.0, retries=0, max_failed_fraction=1.0)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0 + yt.GRACE_SECONDS + 3.0, elapsed
    rows = by_id(status(tmp_path))
    for ytid in ("stall_video", "slow_video"):
        assert (rows[ytid].state, rows[ytid].reason) == ("failed", "timeout"), rows[ytid]

    server.modes.clear()
    summary = run(server, table, tmp_path, timeout=20.0)
    assert summary["states"]["downloaded"] == 2


def test_the_rate_limit_paces_the_job(server, tmp_path):
    """Section downloads run in FFmpeg, which yt-dlp's ratelimit does not throttle: the job paces
    itself, starting no segment while the bytes so far exceed rate x time."""
    table = segs(("pace_a", 0.0, 2.0), ("pace_b", 0.0, 2.0))  # 2 s of 48-kHz 16-bit stereo: 384,000 bytes
    run(server, table, tmp_path, parallel=1, rate_limit="400K")
    first = {}
    for e in server.log:
        first.setdefault(e["ytid"], e["time"])
    assert first["pace_b"] - first["pace_a"] >= 384_000 / 409_600 - 0.05


def test_too_many_failures_raise_without_a_status_table_and_keep_the_ledger(server, tmp_path):
    server.modes.update({"err_a": "error", "err_b": "error"})
    table = segs(("err_a", 0.0, 3.0), ("err_b", 0.0, 3.0), *[(f"ok_{i}", 0.0, 3.0) for i in range(3)])
    (tmp_path / "status.tsv").write_text("stale\n")
    with pytest.raises(YoutubeDownloadError, match=r"2 of 5 available segments failed .*rerun retries"):
        run(server, table, tmp_path, retries=0, max_failed_fraction=0.3)
    assert not (tmp_path / "status.tsv").exists()
    rows = by_id(ledger(tmp_path))
    assert (rows["err_a"].state, rows["err_a"].reason) == ("failed", "http-503")
    assert sum(r.state == "downloaded" for r in rows.values()) == 3

    # within the allowed fraction the table is written, failures included
    summary = run(server, table, tmp_path, retries=0, max_failed_fraction=0.5)
    assert summary["states"] == {"downloaded": 3, "unavailable": 0, "failed": 2}
    assert len(status(tmp_path)) == 5


def test_an_empty_part_writes_an_empty_status_table(server, tmp_path):
    summary = run(server, segs(), tmp_path)
    assert summary["segments"] == 0 and server.log == []
    assert status(tmp_path).columns.tolist() == STATUS_COLUMNS and status(tmp_path).empty


def test_cookies_and_proxy_are_used_but_never_shown(server, tmp_path, monkeypatch, capfd):
    cookies = tmp_path / "secret-cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tcookievalue123456\n")
    before = cookies.read_text()
    # the test server is its own (HTTP) proxy: proxied requests carry the absolute URL
    proxy = f"http://proxyuser:proxypass987@127.0.0.1:{server.port}"
    monkeypatch.setenv(yt.COOKIES_ENV, str(cookies))
    monkeypatch.setenv(yt.PROXY_ENV, proxy)
    server.modes["gone_video"] = "gone"
    run(server, segs(("ok_video", 1.0, 3.0), ("gone_video", 0.0, 2.0)), tmp_path)
    rows = by_id(status(tmp_path))
    assert rows["ok_video"].state == "downloaded" and rows["gone_video"].reason == "http-404"
    assert any(e["proxied"] for e in server.log), "the proxy was used"
    assert any("cookievalue123456" in (e["cookie"] or "") for e in server.log), "the cookies were sent"
    assert cookies.read_text() == before, "the user's cookies file is left as it was"
    out = capfd.readouterr()
    assert "using the cookies file" in out.out and "using the proxy" in out.out
    texts = [out.out, out.err, (tmp_path / "status.tsv").read_text(), (tmp_path / "audio" / "status.tsv").read_text()]
    for secret in ("cookievalue123456", "proxypass987", "proxyuser", str(cookies), proxy):
        assert not any(secret in text for text in texts), secret


def test_cli_downloads_a_part_and_fails_with_one_line(server, tmp_path, capsys):
    lists = tmp_path / "segments.csv"
    lists.write_text("# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n"
                     'cli_a, 1.000, 3.000, "/m/1"\ncli_b, 2.000, 4.000, "/m/1,/m/2"\ncli_c, 0.000, 2.000, "/m/2"\n')
    common = ["download-youtube", "--segment-lists", str(lists), "--per-job", "2",
              "--audio-dir", str(tmp_path / "audio"), "--url-template", server.url_template, "--parallel", "2",
              "--rate-limit", "50M", "--retries", "0",
              "--timeout", "20", "--max-failed-fraction", "0"]
    # part 0 of 1 planned is the last one: it takes all 3 rows
    assert cli_main([*common, "--part", "0", "--parts", "1", "--status", str(tmp_path / "p0.tsv")]) == 0
    p0 = pd.read_csv(tmp_path / "p0.tsv", sep="\t")
    assert p0["ytid"].tolist() == ["cli_a", "cli_b", "cli_c"] and set(p0["state"]) == {"downloaded"}
    # part 1 of 2 planned, per-job 2: the one remaining row (already downloaded)
    assert cli_main([*common, "--part", "1", "--parts", "2", "--status", str(tmp_path / "p1.tsv")]) == 0
    assert pd.read_csv(tmp_path / "p1.tsv", sep="\t")["ytid"].tolist() == ["cli_c"]

    server.modes["cli_new"] = "error"
    lists.write_text(lists.read_text() + 'cli_new, 0.000, 2.000, "/m/2"\n')
    with pytest.raises(SystemExit) as exc:
        cli_main([*common, "--part", "1", "--parts", "2", "--status", str(tmp_path / "p1b.tsv")])
    message = str(exc.value.code)
    assert message.startswith("download-youtube: 1 of 2 available segments failed") and "\n" not in message
    assert not (tmp_path / "p1b.tsv").exists()
    with pytest.raises(SystemExit, match="--part must be in"):
        cli_main([*common, "--part", "2", "--parts", "2", "--status", str(tmp_path / "p2.tsv")])
