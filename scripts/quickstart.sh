#!/usr/bin/env bash
# Quickstart on a fresh machine: install into .venv, then run the embedded demo end to end
# (corpus -> shards -> tokens -> pretraining -> self-training -> HEAR and ASR -> results/table1.md
# and results/table2.md).
# Extra arguments go to snakemake (e.g. --configfile config/ci.yaml, or -n for a dry run).
# It ends by printing Tables 1 and 2 and where the results are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
snakemake --cores all "$@"

# The --configfile given, if any: the report must be built from the same configuration.
config_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --configfile|--configfiles) [ $# -gt 1 ] && config_args=" --configfile $2"; shift ;;
    --configfile=*|--configfiles=*) config_args=" --configfile ${1#*=}" ;;
  esac
  shift
done

echo
if [ -f results/table1.md ]; then
  echo "Table 1 (results/table1.md):"
  echo
  cat results/table1.md
else
  echo "No results/table1.md yet (a dry run, or a target short of the table)."
fi
if [ -f results/table2.md ]; then
  echo
  echo "Table 2 (results/table2.md):"
  echo
  cat results/table2.md
fi
cat <<EOF

Results, under $(pwd):
  results/table1.md, results/table1.csv  Table 1: scores in percent, their +- (95 % bootstrap), Global, parameters
  results/table2.md, results/table2.csv  Table 2: word error rates (ASR) without and with the language model
  results/plots/                         training curves, one PNG per model
  results/scores/, results/models/       per-task scores and settings; models and their metrics.csv
  results/asr/                           per-model ASR downstream, its metrics.csv, scores and hypotheses
One HTML report with the table and the plots:
  snakemake --report report.html${config_args}
The commands (snakemake, encodecmae) are installed in .venv; to have them on PATH in your shell:
  source .venv/bin/activate
EOF
