"""Experiments of a workflow configuration, resolved into what each rule needs.

The workflow's config declares models as a list of experiments (one row per model); this
module turns a row into the inputs and command-line parameters of its training rule, checks
references between rows (``init``, ``targets.clusters_of``), and keeps the logic out of the
Snakefile so it can be unit-tested. A row with ``released: NAME`` trains nothing: its model is
the authors' released checkpoint ``NAME`` (the config's ``released:`` section), converted. A
configuration of released rows only needs no corpus (config/released.yaml). The loss weights
gamma_q of EnCodec targets are estimated (rule estimate_gamma) or given (``encodec.gamma``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from encodecmae.model.config import SIZES
from encodecmae.training.config import ARCHITECTURE_FIELDS, training_keys

# training keys a config's ``training:`` section and an experiment's ``train:`` may set (the other
# TrainConfig fields come from the experiment row or are derived from it below)
TRAIN_KEYS = training_keys()


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass
class Experiment:
    name: str
    label: str
    input: str
    size: str
    arch: dict
    sources: list[str]
    steps: int
    teacher: str | None  # None: EnCodec targets; else the model whose clusters are the targets
    init: str | None
    n_classes: int | None = None  # classes per target stream; None: kept from the init model
    train: dict = field(default_factory=dict)
    paper_line: int | None = None
    released: str | None = None  # a released checkpoint's name (config ``released:``): nothing to train
    # per-stream loss weights: None - estimated by rule estimate_gamma (EnCodec targets, config
    # ``encodec.gamma: estimate``); else as given (the config's list, or [1.0] for cluster targets)
    gamma: list[float] | None = None

    @property
    def targets_kind(self) -> str:
        return "encodec" if self.teacher is None else "clusters"

    @property
    def estimates_gamma(self) -> bool:
        """Whether training reads gamma_q from the estimate (results/gamma.json)."""
        return not self.released and self.gamma is None

    def train_params(self) -> dict:
        """Everything the training command gets besides file paths: the rule's ``params``."""
        p = {"input": self.input, "size": self.size, "steps": self.steps, **self.arch, **self.train}
        if self.n_classes is not None:
            p["n_classes"] = self.n_classes
        if self.teacher is not None:  # one stream of cluster ids
            p["n_streams"] = 1
        if self.gamma is not None:
            p["gamma"] = list(self.gamma)
        if self.init is not None:  # a student learns new targets with a new head
            p["reset_head"] = self.teacher is not None
        return p


def resolve(config: dict) -> dict[str, Experiment]:
    """Experiments by name, in config order; raises ConfigError naming the bad key."""
    sources = list(config.get("corpus", {}).get("sources", {}))  # none: a config that trains nothing
    archs = config.get("architectures", {})
    defaults = {k: v for k, v in config.get("training", {}).items() if k in TRAIN_KEYS}
    out: dict[str, Experiment] = {}
    released = config.get("released", {})
    gamma = encodec_gamma(config.get("encodec", {}))
    for i, row in enumerate(config["experiments"]):
        name = row["name"]
        where = f"experiments[{i}]"
        if name in out:
            raise ConfigError(f"{where}.name: duplicate experiment name {name!r}")
        if "released" in row:
            out[name] = _released_row(row, where, released)
            continue
        if "steps" not in row:
            raise ConfigError(f"{where}.steps: missing (required unless the row is 'released')")
        for key in ("init", "targets"):
            ref = row.get(key)
            ref = ref.get("clusters_of") if isinstance(ref, dict) else ref
            if ref in out and out[ref].released:
                raise ConfigError(f"{where}.{key}: {ref!r} is a released model; training from released "
                                  f"weights or their clusters is not supported")
        init = row.get("init")
        if init is not None and init not in out:
            raise ConfigError(f"{where}.init: {init!r} is not an experiment listed before {name!r}")
        targets = row.get("targets", "encodec")
        teacher = targets.get("clusters_of") if isinstance(targets, dict) else None
        if teacher is not None and teacher not in out:
            raise ConfigError(f"{where}.targets.clusters_of: {teacher!r} is not an experiment listed before {name!r}")
        base = out[init] if init else None
        arch_name = row.get("architecture")
        if arch_name is not None and arch_name not in archs:
            raise ConfigError(f"{where}.architecture: {arch_name!r} is not defined under 'architectures'")
        size = row.get("size", base.size if base else "base")
        if size not in SIZES:
            raise ConfigError(f"{where}.size: {size!r} is not one of {sorted(SIZES)}")
        if base and (row.get("architecture") or row.get("size") or row.get("input")):
            raise ConfigError(f"{where}: a model that starts from 'init' keeps its architecture and input; "
                              f"remove size/architecture/input")
        srcs = row.get("sources", base.sources if base else sources)
        bad = [s for s in srcs if s not in sources]
        if bad:
            raise ConfigError(f"{where}.sources: {bad} not defined under corpus.sources")
        if not srcs:
            raise ConfigError(f"{where}: {name!r} trains on no corpus source (corpus.sources is empty); add "
                              f"sources, or make the row 'released'")
        # the targets' classes: the teacher's k-means clusters, or the EnCodec codebook entries (a
        # model that continues from ``init`` on the same targets keeps its head)
        n_classes = (config["selftraining"]["k"] if teacher is not None
                     else None if init is not None else config["encodec"]["codebook_size"])
        train = {**defaults, **row.get("train", {})}
        if base:  # a student is its teacher's architecture
            given = sorted(k for k in row.get("train", {}) if k in ARCHITECTURE_FIELDS)
            if given:
                raise ConfigError(f"{where}.train: {', '.join(given)} set the architecture, which a model that "
                                  f"starts from 'init' keeps; remove them")
            train.update({k: base.train[k] for k in ARCHITECTURE_FIELDS if k in base.train})
        out[name] = Experiment(
            name=name, label=row.get("label", name), input=row.get("input", base.input if base else "mel256"),
            size=size, arch=dict(archs[arch_name]) if arch_name else (dict(base.arch) if base else {}),
            sources=list(srcs), steps=int(row["steps"]), teacher=teacher, init=init, n_classes=n_classes,
            train=train, paper_line=row.get("paper_line"), gamma=[1.0] if teacher is not None else gamma)
    unknown = [m for m in config.get("asr", {}).get("models", {}) if m not in out]
    if unknown:
        raise ConfigError(f"asr.models: {unknown} are not experiments ({', '.join(out)})")
    return out


def encodec_gamma(encodec: dict) -> list[float] | None:
    """The configured gamma_q of EnCodec targets: a list of ``n_q`` weights, or None for
    "estimate" (rule estimate_gamma); raises ConfigError when the list's length is not n_q."""
    gamma = encodec.get("gamma", "estimate")
    if gamma == "estimate":
        return None
    n_q = encodec.get("n_q", 8)
    if not isinstance(gamma, list) or len(gamma) != n_q:
        got = f"{len(gamma)} weights" if isinstance(gamma, list) else repr(gamma)
        raise ConfigError(f"encodec.gamma: {got}, but encodec.n_q is {n_q}: give one weight per codebook, "
                          f"or 'estimate'")
    return [float(g) for g in gamma]


def released_input(name: str, spec: dict) -> str:
    """The input a release's name says, for planning (the converter reads the real one from the
    file): v1 files (``lpepino/encodecmae-SIZE``) and v2 ``ec-ec-*`` take the EnCodec encoder's
    output, v2 ``mel128-*`` 128 mel bins, other v2 files 256."""
    if name.startswith("ec-ec") or "encodecmae-v2" not in spec.get("url", "encodecmae-v2"):
        return "encodec"
    return "mel128" if name.startswith("mel128") else "mel256"


def _released_row(row: dict, where: str, released: dict) -> Experiment:
    name = row["released"]
    if name not in released:
        raise ConfigError(f"{where}.released: {name!r} is not defined under 'released'")
    extra = sorted(k for k in row if k not in ("name", "label", "released", "paper_line", "size"))
    if extra:
        raise ConfigError(f"{where}: a released model is not trained here; remove {', '.join(extra)}")
    # the size preset (which sizes the jobs' resources; the converter reads the real shapes from the
    # file): given, or the first preset the release's name mentions (mel256-ec-base_st, base-st)
    named = re.search("|".join(s for s in SIZES if s != "debug"), name)
    size = row.get("size") or (named.group(0) if named else None)
    if size not in SIZES:
        raise ConfigError(f"{where}.size: {size!r} is not one of {sorted(SIZES)} (give the released model's size)")
    return Experiment(name=row["name"], label=row.get("label", row["name"]), input=released_input(name, released[name]),
                      size=size, arch={},
                      sources=[], steps=0, teacher=None, init=None, paper_line=row.get("paper_line"),
                      released=name)


def source_shards(corpus: dict, asr: dict | None = None) -> dict[str, int]:
    """Shards per corpus source: its ``n_shards``, or its expected ``hours`` / ``shard_hours``
    rounded up (the shard plan deals the files that are really there to that many shards).
    A source whose audio is a LibriSpeech split of the ASR evaluation (``asr_split``) must name
    one that ``asr`` (the config's asr section) downloads."""
    out = {}
    for name, src in corpus.get("sources", {}).items():
        split = src.get("asr_split")
        if split is not None and split not in (asr or {}).get("librispeech", {}):
            raise ConfigError(f"corpus.sources.{name}.asr_split: {split!r} is not a split under asr.librispeech "
                              f"({sorted((asr or {}).get('librispeech', {}))})")
        if src.get("n_shards"):
            out[name] = int(src["n_shards"])
        elif src.get("hours"):
            out[name] = max(1, math.ceil(float(src["hours"]) / float(corpus.get("shard_hours", 6.0))))
        else:
            raise ConfigError(f"corpus.sources.{name}: give n_shards or hours (the expected duration)")
    return out


# Training settings that set the length of a run or how it is logged, not where it goes.
LENGTH_FIELDS = ("steps", "checkpoint_every", "log_every", "val_every")


def run_keys(config: dict, experiments: dict[str, Experiment], n_shards: dict[str, int]) -> dict[str, str]:
    """Short hash of what defines each trained row's trajectory, not its length: the row's
    settings, its data (the sources as configured and their shard counts), its targets (the
    EnCodec settings that make the tokens and gamma; or the teacher's run key and steps, and the
    self-training settings, that make the clusters) and the run it starts from (run key and steps).

    Names the step-checkpoint directory: rerunning after a kill resumes the same run; more steps
    continue it; anything the resume check compares that changes (a setting, the shard list,
    gamma's inputs, a teacher retrained or trained longer) starts a new run instead of an error
    or a stale checkpoint.
    """
    corpus = config.get("corpus", {})
    demo = {k: corpus[k] for k in ("demo_seed", "demo_minutes") if k in corpus}
    # gamma: a configured list is in the row's own settings; an estimate follows from the other
    # EnCodec settings and gamma_clips, which are not inputs when it is given
    given = encodec_gamma(config.get("encodec", {})) is not None
    encodec = {k: v for k, v in config.get("encodec", {}).items()
               if k not in ("batch_size", "gamma") and not (given and k == "gamma_clips")}
    keys: dict[str, str] = {}

    def upstream(name: str) -> dict:  # a run this one learns from: which run, and how long it ran
        return {"run": keys[name], "steps": experiments[name].steps}

    for name, exp in experiments.items():  # config order: init and teacher come first
        if exp.released:
            continue
        p = {k: v for k, v in exp.train_params().items() if k not in LENGTH_FIELDS}
        p["data"] = {s: {**corpus["sources"][s], "n_shards": n_shards[s], **(demo if corpus["sources"][s].get("demo") else {})}
                     for s in exp.sources}
        p["targets"] = ({"encodec": encodec} if exp.teacher is None
                        else {"clusters_of": upstream(exp.teacher), "selftraining": config.get("selftraining", {})})
        if exp.init is not None:
            p["init"] = upstream(exp.init)
        elif exp.input == "encodec":
            p["frontend"] = encodec
        keys[name] = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]
    return keys
