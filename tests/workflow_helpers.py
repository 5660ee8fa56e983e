"""Helpers shared by the tests (the workflow tests test_workflow, test_dvc, test_slurm, and others)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CI_CONFIG = REPO / "config" / "ci.yaml"
# The test's Python first on PATH: jobs run `python -m encodecmae` and the DVC stages `snakemake`.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake_cmd(workdir: Path, *args: str, config: Path = CI_CONFIG) -> list[str]:
    """The command that runs the project's Snakefile in ``workdir`` on ``config``."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(config), *args]


def snakemake(workdir: Path, *args: str, config: Path = CI_CONFIG, check: bool = True) -> subprocess.CompletedProcess:
    """The project's Snakefile run in ``workdir`` on ``config``."""
    cmd = snakemake_cmd(workdir, *args, config=config)
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=3000)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}")
    return res


def slurm_can_run() -> bool:
    """Whether this machine can run the SLURM test cluster (scripts/slurm_cluster.sh): Debian's
    slurm-wlm installed, and root to start its daemons."""
    return shutil.which("slurmctld") is not None and os.geteuid() == 0


def versioned_files(root: Path) -> dict[str, bytes]:
    """Every file under the outputs that dvc.yaml versions (what `dvc status` compares), with the
    step checkpoints beside the models (.dvcignore leaves them to the machine that resumes from
    them), but not the training jobs' history (jobs.log: times and job ids)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])]
    files = {}
    for out in outs:
        path = root / out
        for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            if f.name != "jobs.log":
                files[str(f.relative_to(root))] = f.read_bytes()
    return files


# The second run of the CI configuration, on fewer threads (one per job: on the SLURM test cluster
# where it can run, tests/test_slurm.py; on one core otherwise, tests/test_workflow.py), builds
# these outputs from nothing. They take a job of every rule of the configuration but the three
# report rules that read every model, task or source (make_table, make_table2, summarize_data).
# DATA_TARGETS: the demo corpus, the listing, resampling and indexes of its three sources, fitted
# codebooks, gamma, one source's tokens, one demo task and the demo speech set (16 jobs). MODEL_TARGETS,
# from those, in two independent chains: mel256_base trained, the task embedded and scored, a
# training curve, and its clusters (features, k-means, assignment) from which mel256_base_st is
# trained; and the untrained model's ASR features, downstream and decoding (19 jobs). 35 jobs of
# the configuration's 91, whose every versioned file must equal the session's run.
DATA_TARGETS = ("results/gamma.json", "data/tokens/speech.index", "data/tasks/demo/events", "data/asr/demo")
MODEL_TARGETS = ("results/scores/mel256_base/events.json", "results/plots/mel256_base.png",
                 "results/models/mel256_base_st/model.pt", "results/asr/untrained/scores.json")
DATA_JOBS = Counter({
    "make_demo_corpus": 1, "list_source": 3, "resample_shard": 3, "index_shards": 3, "fit_codebooks": 1,
    "estimate_gamma": 1, "tokenize_shard": 1, "index_tokens": 1, "make_demo_task": 1, "make_demo_asr": 1})
MODEL_JOBS = Counter({
    "train_mae": 3, "dump_teacher_features": 1, "fit_kmeans": 1, "assign_clusters": 3, "index_clusters": 3,
    "embed_task": 1, "score_task": 1, "plot_curves": 1, "extract_asr_features": 3, "train_asr": 1,
    "decode_asr": 1})


def copy_data_stage(run: Path, to: Path) -> None:
    """The data stage of a finished run of the CI configuration (data/ but the self-training
    targets, and results/gamma.json) copied to ``to`` with its mtimes: what MODEL_TARGETS start from."""
    results = yaml.safe_load(CI_CONFIG.read_text())["results_dir"]
    shutil.copytree(run / "data", to / "data", ignore=lambda d, names: ["selftrain"] if Path(d) == run / "data" else [])
    (to / results).mkdir(parents=True)
    shutil.copy2(run / results / "gamma.json", to / results / "gamma.json")


def assert_same_versioned_files(run: Path, reference: Path, resumed: tuple[str, ...] = (),
                                built: tuple[str, ...] = ()) -> None:
    """``run`` holds every versioned file of ``reference`` (versioned_files), byte for byte, and no
    other, but for step checkpoints of the ``resumed`` models (a job stopped by a signal writes
    one at the step it is on). A run that ``built`` only some targets holds only some of the
    files (those targets among them): each must be one of the reference's, with the same bytes."""
    ours, ref = versioned_files(run), versioned_files(reference)
    assert len(ref) > 100 and len(ours) > (20 if built else 100)
    results = yaml.safe_load(CI_CONFIG.read_text())["results_dir"]
    extra = [name for name in sorted(set(ours) - set(ref))
             if not any(name.startswith(f"{results}/models/{model}/checkpoints/") for model in resumed)]
    assert not extra and (built or set(ref) <= set(ours)), (extra, sorted(set(ref) - set(ours)))
    if built:
        missing = [t for t in built if not any(name == t or name.startswith(f"{t}/") for name in ours)]
        assert not missing, missing
        ref = {name: data for name, data in ref.items() if name in ours}
    resumed_ckpts = tuple(f"{results}/models/{model}/checkpoints/" for model in resumed)
    differ = sorted(name for name in ref if ours[name] != ref[name]
                    and not (name.startswith(resumed_ckpts) and _same_checkpoint(run / name, reference / name)))
    assert not differ, f"{len(differ)} of {len(ref)} versioned files differ from {reference}, e.g. {differ[:10]}"


def _same_checkpoint(a: Path, b: Path) -> bool:
    """Two step checkpoints hold equal weights, optimiser state, RNG states and settings. A run
    resumed from a checkpoint pickles its (equal) optimiser state in other bytes than one that never
    stopped, so the checkpoints that follow a resume are compared by content, not by bytes."""
    import numpy as np
    import torch

    def same(x, y) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if torch.is_tensor(x):
            return torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, np.ndarray):
            return isinstance(y, np.ndarray) and np.array_equal(x, y)
        if isinstance(x, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y

    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    return same(load(a), load(b))


def job_stats(output: str) -> Counter:
    """Jobs by rule from the output of ``snakemake -n --quiet rules`` (empty: nothing to do)."""
    if "Nothing to be done" in output:
        return Counter()
    stats = output[output.index("Job stats:"):]
    jobs = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)})
    jobs.pop("total", None)
    return jobs


def edited_config(tmp_path: Path, edit, base: Path = CI_CONFIG) -> Path:
    """A copy of ``base`` with ``edit(config_dict)`` applied, written under ``tmp_path``."""
    cfg = yaml.safe_load(base.read_text())
    edit(cfg)
    path = tmp_path / f"edited_{len(list(tmp_path.glob('edited_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A file server with single-range requests (``Range: bytes=N-``, honoured unless the file
    changed since the ``If-Range`` date), and, for download tests, settings on the server:
    ``log`` (each GET's path and Range header), ``delay`` (seconds per 64-KiB block),
    ``cut_after`` and ``cuts`` (the next ``cuts`` responses are cut off after that many bytes)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        server = self.server
        server.log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        modified = self.date_time_string(int(path.stat().st_mtime))
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and server.ranges and self.headers.get("If-Range") in (None, modified):
            start = int(m[1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Last-Modified", modified)
        self.end_headers()
        cut = server.cut_after if server.cuts > 0 else None
        server.cuts -= cut is not None
        for i in range(start, len(data), 1 << 16):
            block = data[i : i + (1 << 16)]
            if cut is not None and i - start + len(block) > cut:
                self.wfile.write(block[: cut - (i - start)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(block)
            if server.delay:
                time.sleep(server.delay)


@contextlib.contextmanager
def file_server(root: Path):
    """An HTTP server of ``root`` on 127.0.0.1 at a free port (``.url``), whose ``delay``,
    ``ranges``, ``cut_after``, ``cuts`` and ``log`` the test may set and read (see _QuietHandler)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    httpd.delay, httpd.ranges, httpd.cut_after, httpd.cuts, httpd.log = 0.0, True, None, 1, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def serve_directory(root: Path):
    """Serve ``root`` over HTTP on 127.0.0.1 at a free port; yields the base URL."""
    with file_server(root) as httpd:
        yield httpd.url


def tree_hash(root: Path) -> str:
    """SHA-256 over a directory's file names and bytes (two trees written alike hash alike)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
