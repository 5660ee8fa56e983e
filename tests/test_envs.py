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
