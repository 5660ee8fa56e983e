#!/usr/bin/env bash
# Quickstart on a fresh machine: install into .venv, then run the embedded demo end to end
# (corpus -> shards -> tokens -> pretraining -> self-training -> HEAR -> results/table1.md).
# Extra arguments go to snakemake (e.g. --configfile config/ci.yaml, or -n for a dry run).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash workflow/scripts/setup.sh
. .venv/bin/activate
snakemake --cores all "$@"
