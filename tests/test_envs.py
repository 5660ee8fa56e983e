"""The lock, the install from it, and the conda environments of the rules (exact versions of the lock;
every rule names one)."""

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


def lock_entries():
    """(name, version, marker, hashes) of every requirement in the venv lock."""
    text = (REPO / "envs" / "lock" / "venv.txt").read_text()
    entries = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\\n]+?))?\s*\\?\n", block + "\n")
        if m:
            entries.append((m[1].lower().replace("_", "-"), m[2], m[3], re.findall(r"--hash=sha256:[0-9a-f]{64}", block)))
    return entries


def locked_for_conda():
    """The lock's versions that apply to the conda environments (Python 3.11 on Linux x86_64)."""
    from packaging.markers import Marker

    env = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    return {n: v for n, v, marker, _ in lock_entries() if marker is None or Marker(marker).evaluate(env)}


def test_lock_pins_every_package_with_hashes_and_satisfies_pyproject():
    from packaging.requirements import Requirement

    entries = lock_entries()
    assert len(entries) > 100
    for name, version, _, hashes in entries:
        assert hashes, f"envs/lock/venv.txt: {name}=={version} has no --hash"
    locked = locked_for_conda()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + [r for e in ("workflow", "test", "dvc") for r in extras[e]]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in locked, f"{spec} (pyproject.toml) is not in envs/lock/venv.txt"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"envs/lock/venv.txt has {name}=={locked[name]}, outside pyproject.toml's {spec}"
    # the pair that breaks when resolved separately (torchaudio 2.11.1 does not load with torch 2.11.0)
    assert (locked["torch"], locked["torchaudio"]) == ("2.11.0", "2.11.0")
    # the build backend and pip are locked too, so that nothing in .venv floats
    assert {"pip", "setuptools", "wheel"} <= set(locked)


def test_setup_installs_only_from_the_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "--require-hashes" in setup and "-r envs/lock/venv.txt" in setup
    installs = [ln for ln in setup.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    for line in installs:
        assert "--require-hashes" in line or "--no-deps" in line, f"setup.sh resolves outside the lock: {line}"
    assert "check_stack.py" in setup


def test_env_pins_agree_with_the_lock():
    locked = locked_for_conda()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    library = requirement_map(project["dependencies"])
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert [e.stem for e in envs] == ["data", "report", "torch"]
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        reqs = requirement_map(pip)
        for name, version in reqs.items():
            assert version.startswith("=="), f"{env.name}: {name}{version} is not an exact pin"
            assert name in locked, f"{env.name}: {name} is not in envs/lock/venv.txt"
            assert version == f"=={locked[name]}", f"{env.name}: {name}{version} but the lock says {locked[name]}"
        # the library's own dependencies are all there
        missing = set(library) - set(reqs)
        assert not missing, f"{env.name} lacks {sorted(missing)}"
        py = next(d for d in spec["dependencies"] if isinstance(d, str) and d.startswith("python"))
        assert py == "python=3.11"


def test_check_stack_reads_the_lock_for_this_interpreter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_stack", REPO / "scripts" / "check_stack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = ("torch==2.11.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
            "pywin32==312 ; sys_platform == 'win32' \\\n    --hash=sha256:" + "b" * 64 + "\n"
            "numpy==2.4.6 ; python_full_version >= '3.11' \\\n")
    assert mod.locked_versions(text) == {"torch": "2.11.0", "numpy": "2.4.6"}
    # this interpreter's stack is the locked one (setup.sh ran check_stack.py after installing)
    import importlib.metadata as md

    assert md.version("torch").split("+")[0] == "2.11.0"
    assert md.version("torchaudio").split("+")[0] == "2.11.0"


def test_check_stack_names_the_package_that_does_not_load(capsys, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_stack", REPO / "scripts" / "check_stack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "CHECKS", [("soundfile", "import soundfile"),
                                        ("torchaudio", "raise OSError('Could not load libtorchaudio.so\\nmore')")])
    assert mod.main() == 1
    err = capsys.readouterr().err
    assert err.strip() == "check_stack: torchaudio does not load: OSError: Could not load libtorchaudio.so"


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
    pkg = copy / "src" / "encodecmae"
    cache = {(p.parent.parent.relative_to(pkg) / p.name.split(".")[0]).as_posix() for p in pkg.rglob("__pycache__/*.pyc")}
    assert "cli" in cache and any(m.startswith("demo/") for m in cache), cache
