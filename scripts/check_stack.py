"""Check that the installed stack loads, naming the broken package in one line if not.

Run by setup.sh right after installing. Each check imports the part that fails first when
versions disagree (torchaudio's compiled extension against torch, encodec's model code, the
workflow engine and its SLURM executor); a mismatch with the lock is reported as well.
"""

import importlib
import importlib.metadata as md
import re
import sys
import warnings
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "envs" / "lock" / "venv.txt"

CHECKS = [
    ("torch", "import torch; torch.zeros(1).sum()"),
    ("torchaudio", "import torchaudio, torch; torchaudio.functional.resample(torch.zeros(1, 480), 16000, 24000)"),
    ("encodec", "import encodec; encodec.EncodecModel.encodec_model_24khz(pretrained=False)"),
    ("soundfile", "import soundfile"),
    ("snakemake", "import snakemake.api"),
    ("snakemake-executor-plugin-slurm", "import snakemake_executor_plugin_slurm"),
    ("scikit-learn", "import sklearn.cluster"),
    ("dvc", "import dvc.repo"),
    ("encodecmae", "import encodecmae.cli"),
]


def locked_versions(text: str) -> dict[str, str]:
    """Exact versions of the lock's requirement lines that apply to this interpreter."""
    from packaging.markers import Marker

    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m and (m[3] is None or Marker(m[3]).evaluate()):
            out[m[1].lower().replace("_", "-")] = m[2]
    return out


def main() -> int:
    warnings.filterwarnings("ignore")  # deprecation notices of the checked packages are not failures
    for dist, code in CHECKS:
        try:
            exec(code, {})
        except Exception as e:  # noqa: BLE001 - any failure to load is the message
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"check_stack: {dist} does not load: {type(e).__name__}: {first[:300]}", file=sys.stderr)
            return 1
    wrong = []
    for name, version in locked_versions(LOCK.read_text()).items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            wrong.append(f"{name} (missing, lock says {version})")
            continue
        if have != version:
            wrong.append(f"{name} {have} (lock says {version})")
    if wrong:
        print(f"check_stack: installed versions differ from {LOCK.name}: {', '.join(wrong)}", file=sys.stderr)
        return 1
    import torch

    print(f"check_stack: ok (torch {torch.__version__}, Python {sys.version.split()[0]}, "
          f"{len(locked_versions(LOCK.read_text()))} locked packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
