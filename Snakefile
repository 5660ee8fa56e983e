# EnCodecMAE reproduction workflow: downloads -> corpus -> 24 kHz shards -> EnCodec tokens ->
# pretraining -> self-training -> large model from the base+ST clusters -> HEAR evaluation ->
# Table 1, and the SUPERB ASR evaluation -> Table 2 (for the models asr.models names).
# Plain `snakemake --cores all` runs the embedded demo (config/config.yaml); the paper's runs
# use `--configfile config/paper.yaml`.
import sys

from snakemake.utils import min_version

min_version("9.0")

# The workflow runs the package of this checkout, installed or not: the Snakefile imports it from
# src/, and every job's shell exports it on PYTHONPATH before `python -m encodecmae` (in a per-rule
# conda environment Snakemake clears PYTHONPATH, and the package is not installed there).
sys.path.insert(0, f"{workflow.basedir}/src")
# (The prefix is formatted like a command, hence the doubled braces.)
shell.prefix(f'export PYTHONPATH="{workflow.basedir}/src${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; ')


# The demo is the default; a --configfile replaces it instead of being merged into it (merging
# would add the demo's sources, tasks and experiments to the paper's).
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


# Checked against the schema (its defaults filled in), with a short message naming the bad key.
from encodecmae.workflow.config_check import ConfigError, check_config

try:
    check_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
                 source=", ".join(map(str, workflow.config_settings.configfiles)) or "config/config.yaml")
except ConfigError as e:
    raise ConfigError(str(e)) from None  # the message says it all; no traceback into the checker


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tokens.smk"
include: "rules/pretrain.smk"
include: "rules/selftrain.smk"
include: "rules/released.smk"
include: "rules/hear.smk"
include: "rules/asr.smk"
include: "rules/report.smk"


rule all:
    input:
        f"{R}/table1.md",
        f"{R}/table1.csv",
        expand(f"{R}/plots/{{model}}.png", model=TRAINED),
        [f"{R}/data_summary.md"] if SOURCES else [],  # none: a configuration that trains nothing
        asr_data(),
        f"{R}/table2.md",
    default_target: True


rule pretrain_all:
    input:
        expand(f"{R}/models/{{model}}/model.pt", model=EXPERIMENTS),


rule asr_data:
    input:
        asr_data(),


rule asr_all:
    input:
        expand(f"{R}/asr/{{model}}/scores.json", model=ASR_MODELS),


rule hear_all:
    input:
        expand(f"{R}/scores/{{model}}/{{task}}.json", model=EXPERIMENTS, task=TASKS),
