# Corpus -> 24 kHz mono shards. A shard (a few hours of audio: corpus.shard_hours) is the unit of
# every data job; the number of jobs grows with hours of audio, never with clips.


rule make_demo_corpus:
    output:
        directory(f"{D}/raw/demo"),
    params:
        demo_seed=config["corpus"]["demo_seed"],
        demo_minutes=config["corpus"]["demo_minutes"],
    resources:
        runtime=30,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/make_demo_corpus.log",
    benchmark:
        f"{D}/benchmarks/make_demo_corpus.tsv"
    shell:
        "python -m encodecmae make-demo-corpus --out {output} --demo-seed {params.demo_seed} --demo-minutes {params.demo_minutes} > {log} 2>&1"


# Downloads are local rules: on a cluster they run where Snakemake runs, which has the internet
# (compute nodes often do not). Archives, complete and partial, are kept in download_cache/, not
# in the output that Snakemake deletes when a job fails, so a rerun continues them (HTTP Range).
rule download_source:
    output:
        directory(f"{D}/downloads/{{source}}"),
    params:
        archives=archive_flags,
        cache=f"{D}/download_cache/{{source}}",
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_source/{{source}}.log",
    shell:
        "python -m encodecmae download-archives {params.archives} --out {output} --cache {params.cache} > {log} 2>&1"


rule list_source:
    input:
        source_input,
    output:
        f"{D}/lists/{{source}}.tsv",
    params:
        source_dir=source_dir,
        n_shards=n_shards,
    resources:
        runtime=lambda wildcards: list_runtime(wildcards.source),
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/list_source/{{source}}.log",
    shell:
        "python -m encodecmae list-audio --source-dir {params.source_dir} --n-shards {params.n_shards} --out {output} "
        "> {log} 2>&1"


rule resample_shard:
    input:
        f"{D}/lists/{{source}}.tsv",
    output:
        audio=f"{D}/shards/{{source}}/{{shard}}/audio.npy",
        manifest=f"{D}/shards/{{source}}/{{shard}}/manifest.csv",
    params:
        out_dir=output_parent,
        max_bad_fraction=config["corpus"]["max_bad_fraction"],
    resources:
        mem_mb=data_resource("resample", shard_hours, key="mem_mb"),
        runtime=data_resource("resample", shard_hours),
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/resample_shard/{{source}}/{{shard}}.log",
    benchmark:
        f"{D}/benchmarks/resample_shard/{{source}}/{{shard}}.tsv"
    shell:
        "python -m encodecmae resample --file-list {input} --shard {wildcards.shard} --out {params.out_dir} "
        "--max-bad-fraction {params.max_bad_fraction} > {log} 2>&1"


rule index_shards:
    input:
        lambda wildcards: shard_manifests([wildcards.source]),
    output:
        f"{D}/shards/{{source}}.index",
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/index_shards/{{source}}.log",
    shell:
        "python -m encodecmae index-files --files {input} --out {output} > {log} 2>&1"
