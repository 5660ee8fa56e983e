# Helpers shared by the rule files. Anything with logic worth testing lives in the package
# (encodecmae.workflow.experiments); these functions only map wildcards to paths and parameters.
import json
import math
import posixpath
import shlex
import urllib.parse
from pathlib import Path

from encodecmae.training.config import to_args
from encodecmae.workflow.experiments import resolve, run_keys, source_shards
from encodecmae.workflow.resources import (asr_train_resources, data_mem_mb, data_runtime, encoder_size,
                                           train_resources)

D = config["data_dir"]
# The corpus -> tokens -> pretraining -> self-training chain is the critical path: its jobs go
# before the HEAR and report jobs whenever both are ready, which fill the cores in between.
CHAIN_PRIORITY = 10
R = config["results_dir"]
EXPERIMENTS = resolve(config)
TRAINED = [name for name, e in EXPERIMENTS.items() if e.steps > 0]
RELEASED = config["released"]
RELEASED_ROWS = [name for name, e in EXPERIMENTS.items() if e.released]  # converted, not trained
SOURCES = config["corpus"]["sources"]
N_SHARDS = source_shards(config["corpus"], config.get("asr"))  # by duration: expected hours / shard_hours
RUN_KEYS = run_keys(config, EXPERIMENTS, N_SHARDS)  # names each training run's checkpoint directory
TASKS = config["tasks"]
ASR = config.get("asr", {})  # the ASR evaluation's downloads (LibriSpeech, LM, lexicon); none in the demo
# Threads and GPU of the jobs that run a network over audio; their time limits follow from these.
COMPUTE = config["compute"]
DEVICE = "cuda" if COMPUTE["gpu"] else "cpu"
ENC = config["encodec"]
ENCODEC_CKPT = (
    f"{D}/encodec/encodec_fitted.pt"
    if ENC["weights"] == "fitted"
    else f"{D}/encodec/{ENC['url'].rsplit('/', 1)[-1]}"
)


def one_of(names):
    """A wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(names) or "^$"


wildcard_constraints:
    model=one_of(EXPERIMENTS),
    teacher=one_of(EXPERIMENTS),
    source=one_of(SOURCES),
    task=one_of(TASKS),
    release=one_of(RELEASED),
    shard=r"\d{3}\d*",  # 000 ... 999, 1000 ... (Snakemake reads {3,} as no quantifier)
    part=r"\d{4}\d*",  # download jobs of a YouTube source: 0000, 0001, ...
    split="|".join(ASR.get("librispeech", {})) or "^$",
    role="train|dev|test",


def input_parent(key):
    """A params function: the directory of input ``key`` (a shard directory from its manifest)."""

    def parent(wildcards, input):
        return str(Path(input[key]).parent)

    return parent


def input_parents(key):
    """A params function: the directories of the files of input ``key`` (shard directories)."""

    def parents(wildcards, input):
        return [str(Path(f).parent) for f in input[key]]

    return parents


def output_parent(wildcards, output):
    return str(Path(output[0]).parent)


def shard_ids(source):
    return [f"{i:03d}" for i in range(N_SHARDS[source])]


def shard_dirs(sources):
    return [f"{D}/shards/{s}/{i}" for s in sources for i in shard_ids(s)]


def source_manifests(wildcards):
    return shard_manifests([wildcards.source])


def token_files(wildcards):
    return [f"{D}/tokens/{wildcards.source}/{i}.npy" for i in shard_ids(wildcards.source)]


def cluster_files(wildcards):
    return [f"{D}/selftrain/{wildcards.teacher}/clusters/{wildcards.source}/{i}.npy"
            for i in shard_ids(wildcards.source)]


def release_of(wildcards):
    return EXPERIMENTS[wildcards.model].released


def released_download(wildcards):
    return f"{D}/released/{release_of(wildcards)}/model.pt"


def released_url(wildcards):
    """The download URL of a release, or of a released row's release."""
    return RELEASED[wildcards.release if "release" in wildcards.keys() else release_of(wildcards)]["url"]


def released_checksum(wildcards):
    return checksum_arg(RELEASED[wildcards.release])


def shard_manifests(sources):
    return [f"{d}/manifest.csv" for d in shard_dirs(sources)]


def source_input(wildcards):
    """The rule outputs that hold a source's audio; none for a directory the user fills (its
    absence is list-audio's error, at run time, so that the workflow plans without the data)."""
    src = SOURCES[wildcards.source]
    if src.get("demo"):
        return f"{D}/raw/demo"
    if src.get("archives"):
        return f"{D}/downloads/{wildcards.source}"
    if src.get("youtube"):
        return youtube_status_tables([wildcards.source])
    if src.get("asr_split"):
        return f"{D}/asr/librispeech/{src['asr_split']}"
    return []


def source_dir(wildcards):
    src = SOURCES[wildcards.source]
    if src.get("demo"):
        return f"{D}/raw/demo/{wildcards.source}"
    if src.get("youtube"):
        return f"{D}/downloads/{wildcards.source}/audio"
    if src.get("asr_split"):
        return f"{D}/asr/librispeech/{src['asr_split']}"
    return f"{D}/downloads/{wildcards.source}" if src.get("archives") else src["path"]


def checksum_arg(spec):
    """The checksum a download is verified against, as the download commands take it: what the
    dataset publishes (sha256:, sha1: or md5:), '-' for none."""
    algo = next((a for a in ("sha256", "sha1", "md5") if spec.get(a)), None)
    return f"{algo}:{spec[algo]}" if algo else "-"


def url_name(url):
    """The file name a URL ends in."""
    return posixpath.basename(urllib.parse.urlsplit(url).path)


def archive_flags(wildcards):
    """--archive URL CHECKSUM for each archive of a downloaded source."""
    archives = SOURCES[wildcards.source]["archives"]
    return " ".join(f"--archive {shlex.quote(a['url'])} {checksum_arg(a)}" for a in archives)


# YouTube sources (AudioSet): the segment lists, then download jobs ("parts") of segments_per_job
# segments each; the number of parts is planned from the configured segment count.
def youtube_parts(source):
    yt = SOURCES[source]["youtube"]
    return [f"{i:04d}" for i in range(math.ceil(yt["segments"] / yt["segments_per_job"]))]


def youtube_status_tables(sources):
    return [f"{D}/downloads/{s}/status/{p}.tsv" for s in sources if SOURCES[s].get("youtube") for p in youtube_parts(s)]


def segment_list_files(wildcards):
    lists = SOURCES[wildcards.source]["youtube"]["segment_lists"]
    return [f"{D}/downloads/{wildcards.source}/lists/{url_name(x['url'])}" for x in lists]


def segment_list_spec(wildcards):
    lists = SOURCES[wildcards.source]["youtube"]["segment_lists"]
    return next(x for x in lists if url_name(x["url"]) == wildcards.filename)


def segment_list_url(wildcards):
    return segment_list_spec(wildcards)["url"]


def segment_list_checksum(wildcards):
    return checksum_arg(segment_list_spec(wildcards))


def youtube_flags(wildcards):
    yt = SOURCES[wildcards.source]["youtube"]
    flags = (f"--parts {len(youtube_parts(wildcards.source))} --per-job {yt['segments_per_job']} "
             f"--url-template {shlex.quote(yt['url_template'])} --parallel {yt['parallel']} --retries {yt['retries']} "
             f"--timeout {yt['timeout']} --max-failed-fraction {yt['max_failed_fraction']}")
    return flags + (f" --rate-limit {shlex.quote(str(yt['rate_limit']))}" if yt.get("rate_limit") else "")


def n_shards(wildcards):
    return N_SHARDS[wildcards.source]


def list_runtime(wildcards):
    """Minutes for list-audio: reading ~100 file headers a second, an hour of headroom."""
    return 60 + math.ceil(SOURCES[wildcards.source].get("hours", 0) * 3600 / 10 / 100 / 60)


def target_files(exp):
    """Per-shard targets of an experiment: EnCodec tokens, or its teacher's cluster ids."""
    if exp.teacher is None:
        return [f"{D}/tokens/{s}/{i}.npy" for s in exp.sources for i in shard_ids(s)]
    return [f"{D}/selftrain/{exp.teacher}/clusters/{s}/{i}.npy" for s in exp.sources for i in shard_ids(s)]


def shard_index(source):
    """The index of a source's shards: jobs that read every shard depend on it, not on each one."""
    return f"{D}/shards/{source}.index"


def target_index(exp, source):
    if exp.teacher is None:
        return f"{D}/tokens/{source}.index"
    return f"{D}/selftrain/{exp.teacher}/clusters/{source}.index"


def train_inputs(wildcards):
    exp = EXPERIMENTS[wildcards.model]
    inputs = {"shards": [shard_index(s) for s in exp.sources], "targets": [target_index(exp, s) for s in exp.sources]}
    if exp.estimates_gamma:  # config encodec.gamma: estimate (a given list is in train_settings)
        inputs["gamma"] = f"{R}/gamma.json"
    if exp.init is not None:
        inputs["init"] = f"{R}/models/{exp.init}/model.pt"
    elif exp.input == "encodec":
        inputs["encodec"] = ENCODEC_CKPT
    return inputs


def train_shards(wildcards):
    return shard_dirs(EXPERIMENTS[wildcards.model].sources)


def train_targets(wildcards):
    return target_files(EXPERIMENTS[wildcards.model])


def train_settings(wildcards):
    """Flags of the training command that are settings, not paths. A function of the wildcards
    only: Snakemake records such params and reruns the rule when they change (params derived
    from ``input`` are not recorded)."""
    return to_args(EXPERIMENTS[wildcards.model].train_params())


def train_input_flags(wildcards, input):
    """Flags naming the training inputs besides shards and targets."""
    exp = EXPERIMENTS[wildcards.model]
    flags = []
    if exp.estimates_gamma:
        flags.append(f"--gamma-file {input.gamma}")
    if exp.init is not None:
        flags.append(f"--init-from {input.init}")
    elif exp.input == "encodec":
        flags.append(f"--encodec-checkpoint {input.encodec}")
    return " ".join(flags)


def checkpoint_dir(wildcards):
    return f"{R}/models/{wildcards.model}/checkpoints/{RUN_KEYS[wildcards.model]}"


def teacher_sources(wildcards):
    return EXPERIMENTS[wildcards.teacher].sources


def teacher_shard_indexes(wildcards):
    return [shard_index(s) for s in teacher_sources(wildcards)]


def teacher_shards(wildcards):
    return shard_dirs(teacher_sources(wildcards))


def crops_per_shard(wildcards):
    n = sum(N_SHARDS[s] for s in teacher_sources(wildcards))
    return -(-config["selftraining"]["n_crops"] // n)


def task_dir(task):
    """A task's folder as the evaluation reads it: a generated demo task, or a HEAR task prepared
    at 24 kHz (from its downloaded archive or from a directory the user has)."""
    if TASKS[task].get("demo"):
        return f"{D}/tasks/demo/{task}"
    return f"{D}/tasks/hear/{task}"


def task_inputs(tasks):
    return [task_dir(t) for t in tasks]


def hear_archive(task):
    return f"{D}/downloads/hear/{task}/{url_name(TASKS[task]['archive'])}"


def hear_task_source_input(wildcards):
    """The downloaded archive of a task; none for a directory the user prepared (checked by the
    command at run time, so that the workflow plans before the data is there)."""
    return hear_archive(wildcards.task) if TASKS[wildcards.task].get("archive") else []


def hear_task_source(wildcards):
    spec = TASKS[wildcards.task]
    return hear_archive(wildcards.task) if spec.get("archive") else spec["path"]


def hear_archive_url(wildcards):
    return TASKS[wildcards.task]["archive"]


def hear_archive_checksum(wildcards):
    return checksum_arg(TASKS[wildcards.task])


def hear_upsample_flag(wildcards):
    return "--allow-upsampling" if TASKS[wildcards.task]["upsample"] else ""


# The ASR evaluation (Table 2): its data, LibriSpeech or the demo's synthetic speech.
ASR_MODELS = list(ASR.get("models", {}))  # checked against the experiments by resolve()
# the SUPERB roles of LibriSpeech's splits: train, select the model on dev, report on test
LIBRISPEECH_ROLES = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


def asr_data():
    """Every download of the ASR evaluation (none when the configuration has no asr section)."""
    files = [f"{D}/asr/librispeech/{split}" for split in ASR.get("librispeech", {})]
    return files + [f"{D}/asr/{kind}/{url_name(ASR[kind]['url'])}" for kind in ("lm", "lexicon") if kind in ASR]


def asr_split_input(wildcards):
    """Where a split's utterances come from (a rule's output): the demo set, or a LibriSpeech split."""
    if ASR.get("demo"):
        return f"{D}/asr/demo"
    return f"{D}/asr/librispeech/{LIBRISPEECH_ROLES[wildcards.role]}"


def asr_split_dir(wildcards):
    if ASR.get("demo"):
        return f"{D}/asr/demo/{wildcards.role}"
    return f"{D}/asr/librispeech/{LIBRISPEECH_ROLES[wildcards.role]}"


def asr_lm_inputs(wildcards):
    """LM and lexicon of the beam search: built with the demo set, or downloaded."""
    if ASR.get("demo"):
        return {"lm": f"{D}/asr/demo", "lexicon": f"{D}/asr/demo"}
    return {"lm": f"{D}/asr/lm/{url_name(ASR['lm']['url'])}", "lexicon": f"{D}/asr/lexicon/{url_name(ASR['lexicon']['url'])}"}


def asr_lm_paths(wildcards):
    if ASR.get("demo"):
        return f"--lm {D}/asr/demo/lm.arpa --lexicon {D}/asr/demo/lexicon.lst"
    files = asr_lm_inputs(wildcards)
    return f"--lm {files['lm']} --lexicon {files['lexicon']}"


def asr_role_hours(wildcards):
    """Hours of speech in a split (the demo's minutes; LibriSpeech: train asr.hours, dev and test
    5.4 h each)."""
    if ASR.get("demo"):
        return ASR["demo_minutes"] / 60
    return ASR["hours"] if wildcards.role == "train" else 5.4


def table2_spec():
    """Our Table 2 rows: each model's label, the paper row it reproduces, and the released
    checkpoint it is (none: trained here)."""
    return shlex.quote(json.dumps([{"name": m, "label": EXPERIMENTS[m].label, "paper_row": ASR["models"][m],
                                    "released": EXPERIMENTS[m].released} for m in ASR_MODELS]))


def asr_train_resource(key):
    def get(wildcards):
        return asr_train_resources(ASR)[key]

    return get


def librispeech_url(wildcards):
    return ASR["librispeech"][wildcards.split]["url"]


def librispeech_checksum(wildcards):
    return checksum_arg(ASR["librispeech"][wildcards.split])


def asr_file_url(wildcards):
    return ASR[wildcards.kind]["url"]


def asr_file_checksum(wildcards):
    return checksum_arg(ASR[wildcards.kind])


def task_input(wildcards):
    return task_inputs([wildcards.task])


def task_param(wildcards):
    return task_dir(wildcards.task)


def table_spec():
    """What the table needs to know about each model: label and the paper's line."""
    return shlex.quote(
        json.dumps(
            [
                {"name": n, "label": e.label, "paper_line": e.paper_line, "released": e.released}
                for n, e in EXPERIMENTS.items()
            ]
        )
    )


# --- cluster resources (sized in encodecmae.workflow.resources.train_resources) --------------------------


# A run longer than a job's time limit is done in segments, each job stopping with a checkpoint
# before its limit; the training rule is resubmitted that many times (plus one for a failure).
TRAIN_SEGMENTS = max([train_resources(EXPERIMENTS[n])["segments"] for n in TRAINED] or [1])


def train_resource(key):
    """A threads/resources function: ``key`` of the model's training-job sizing."""

    def get(wildcards):
        return train_resources(EXPERIMENTS[wildcards.model])[key]

    return get


# Data jobs: measured throughput x the job's audio (encodecmae.workflow.resources).
def source_shard_hours(source):
    """Hours of audio in one shard of ``source``: its expected hours over its shards (a demo
    source: the demo corpus's minutes; a directory with n_shards only: shard_hours)."""
    corpus, src = config["corpus"], SOURCES[source]
    hours = src.get("hours") or (corpus["demo_minutes"] / 60 if src.get("demo") else corpus["shard_hours"] * N_SHARDS[source])
    return hours / N_SHARDS[source]


def data_resource(stage, hours, model=None, key="runtime"):
    """A resources function: ``key`` (runtime or mem_mb) of a ``stage`` job over ``hours(wildcards)``
    hours of audio, with the encoder of wildcard ``model`` for the encoder stages."""

    def get(wildcards):
        exp = EXPERIMENTS[wildcards[model]] if model else None
        if key == "mem_mb":
            return data_mem_mb(stage, exp)
        return data_runtime(stage, hours(wildcards), COMPUTE["threads"], encoder_size(exp) if exp else "any")

    return get


def shard_hours(wildcards):
    return source_shard_hours(wildcards.source)


def crop_hours(wildcards):
    """Audio embedded by dump-features: n_crops 4-s crops."""
    return config["selftraining"]["n_crops"] * 4 / 3600


def task_hours(wildcards):
    return TASKS[wildcards.task].get("hours", 1.0)


def model_mem_mb(wildcard):
    """A resources function: host memory of a job that loads the model of wildcard ``wildcard``."""
    return data_resource("embed", None, wildcard, "mem_mb")
