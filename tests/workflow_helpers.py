"""Helpers shared by the workflow tests (test_workflow, test_dvc, test_slurm)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CI_CONFIG = REPO / "config" / "ci.yaml"
# The test's Python first on PATH: jobs run `python -m encodecmae` and the DVC stages `snakemake`.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(workdir: Path, *args: str, config: Path = CI_CONFIG, check: bool = True) -> subprocess.CompletedProcess:
    """The project's Snakefile run in ``workdir`` on ``config``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), *args]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=3000)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}")
    return res


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
    def log_message(self, *args):  # keep pytest output clean
        pass


@contextlib.contextmanager
def serve_directory(root: Path):
    """Serve ``root`` over HTTP on 127.0.0.1 at a free port; yields the base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
