# Corpus -> 24 kHz mono shards. A shard (hundreds to thousands of clips) is the unit of every
# data job; the number of jobs grows with shards, never with clips.


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


rule download_source:
    output:
        directory(f"{D}/downloads/{{source}}"),
    params:
        archives=archive_flags,
    resources:
        runtime=1440,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_source/{{source}}.log",
    shell:
        "python -m encodecmae download-archives {params.archives} --out {output} > {log} 2>&1"


rule list_source:
    input:
        source_input,
    output:
        f"{D}/lists/{{source}}.txt",
    params:
        source_dir=source_dir,
    resources:
        runtime=30,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/list_source/{{source}}.log",
    shell:
        "python -m encodecmae list-audio --source-dir {params.source_dir} --out {output} > {log} 2>&1"


rule resample_shard:
    input:
        f"{D}/lists/{{source}}.txt",
    output:
        audio=f"{D}/shards/{{source}}/{{shard}}/audio.npy",
        manifest=f"{D}/shards/{{source}}/{{shard}}/manifest.csv",
    params:
        n_shards=n_shards,
        out_dir=output_parent,
    resources:
        mem_mb=4000,
        runtime=60,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/resample_shard/{{source}}/{{shard}}.log",
    benchmark:
        f"{D}/benchmarks/resample_shard/{{source}}/{{shard}}.tsv"
    shell:
        "python -m encodecmae resample --file-list {input} --n-shards {params.n_shards} --shard {wildcards.shard} "
        "--out {params.out_dir} > {log} 2>&1"
