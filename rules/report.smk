# Results: Table 1 (ours beside the paper's lines) and training curves, also in the HTML
# report that `snakemake --report report.html` builds.


rule make_table:
    input:
        scores=expand(f"{R}/scores/{{model}}/{{task}}.json", model=EXPERIMENTS, task=TASKS),
        tasks=task_inputs(TASKS),
        models=expand(f"{R}/models/{{model}}/model.pt", model=EXPERIMENTS),
    output:
        csv=report(f"{R}/table1.csv", caption="../workflow/report/table1.rst", category="Table 1"),
        md=f"{R}/table1.md",
    params:
        spec=table_spec(),
        task_dirs=[task_dir(t) for t in TASKS],
    resources:
        runtime=30,
    conda:
        "../envs/report.yaml"
    log:
        f"{R}/logs/make_table.log",
    shell:
        "python -m encodecmae make-table --spec {params.spec} --scores {input.scores} --task-dirs {params.task_dirs} "
        "--checkpoints {input.models} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule make_table2:
    input:
        scores=expand(f"{R}/asr/{{model}}/scores.json", model=ASR_MODELS),
        models=expand(f"{R}/models/{{model}}/model.pt", model=ASR_MODELS),
    output:
        csv=report(f"{R}/table2.csv", caption="../workflow/report/table2.rst", category="Table 2"),
        md=f"{R}/table2.md",
    params:
        spec=table2_spec(),
        test_set="the demo's synthetic test speech" if ASR.get("demo") else "LibriSpeech test-clean",
    resources:
        runtime=30,
    conda:
        "../envs/report.yaml"
    log:
        f"{R}/logs/make_table2.log",
    shell:
        "python -m encodecmae make-table2 --spec {params.spec} --scores {input.scores} --checkpoints {input.models} "
        "--test-set {params.test_set:q} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule plot_curves:
    input:
        f"{R}/models/{{model}}/metrics.csv",
    output:
        report(f"{R}/plots/{{model}}.png", caption="../workflow/report/curves.rst", category="Training curves"),
    resources:
        runtime=30,
    conda:
        "../envs/report.yaml"
    log:
        f"{R}/logs/plot_curves/{{model}}.log",
    shell:
        "python -m encodecmae plot-curves --metrics {input} --out {output} --title {wildcards.model} > {log} 2>&1"


# What data the run obtained: clips and hours per source, skipped files, YouTube losses by reason,
# clips per task split.
rule summarize_data:
    input:
        manifests=shard_manifests(SOURCES),
        status=youtube_status_tables(SOURCES),
        tasks=task_inputs(TASKS),
    output:
        md=report(f"{R}/data_summary.md", caption="../workflow/report/data_summary.rst", category="Data"),
        csv=f"{R}/data_summary.csv",
    resources:
        runtime=30,
    conda:
        "../envs/report.yaml"
    log:
        f"{R}/logs/summarize_data.log",
    shell:
        "python -m encodecmae summarize-data --manifests {input.manifests} --status {input.status} "
        "--task-dirs {input.tasks} --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"
