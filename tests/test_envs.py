"""The conda environments of the rules pin what pyproject.toml pins, and every rule names one."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def requirement_map(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", r.strip())
        out[m[1].lower().replace("_", "-")] = m[2].replace(" ", "")
    return out


def test_env_pins_agree_with_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = requirement_map(project["dependencies"])
    extras = requirement_map(project["optional-dependencies"]["workflow"])
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        reqs = requirement_map(pip)
        for name, version in reqs.items():
            expected = pinned.get(name, extras.get(name))
            assert expected is not None, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert version == expected, f"{env.name}: {name}{version} but pyproject.toml says {name}{expected}"
        # the library's own dependencies are all there, torch and torchaudio pinned together
        missing = set(pinned) - set(reqs)
        assert not missing, f"{env.name} lacks {sorted(missing)}"
        assert reqs["torch"] == reqs["torchaudio"] == "==2.11.*"
        py = next(d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python"))
        assert py == "python=3.11"


def test_every_rule_names_an_environment_file_that_exists():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.findall(r"(?m)^rule (\w+):", text)
        blocks = re.split(r"(?m)^rule \w+:", text)[1:]
        for name, block in zip(rules, blocks):
            m = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            assert m, f"{smk.name}: rule {name} has no conda environment"
            assert (smk.parent / m[1]).resolve().exists(), f"{smk.name}: rule {name}: {m[1]} not found"


def test_jobs_run_the_checkouts_package_with_pythonpath_cleared(tmp_path):
    """Conda jobs start with PYTHONPATH cleared and without the package installed; the Snakefile's
    shell prefix puts the checkout's src/ first, so a job imports the package from the workflow's
    own checkout (here a copy, while the test's Python has the package installed from REPO)."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "checkout"
    copy.mkdir()
    for part in ("Snakefile", "rules", "workflow", "config", "envs", "src"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / part,
                                                           **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                              if src.is_dir() else {}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    work = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(copy / "Snakefile"), "-d", str(work),
                          "--configfile", str(copy / "config" / "ci.yaml"), "--cores", "1", "data/tasks/demo/emotion"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (work / "data" / "tasks" / "demo" / "emotion" / "task_metadata.json").exists()
    # the job compiled the copy's modules: it imported them from the copy, not from REPO
    cache = {p.name.split(".")[0] for p in (copy / "src" / "encodecmae" / "__pycache__").glob("*.pyc")}
    assert {"cli", "demo"} <= cache, cache
