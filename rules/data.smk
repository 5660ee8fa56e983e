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


# AudioSet from YouTube. The official segment lists first; then each job downloads its part of
# them with yt-dlp (only each segment's 10 s, audio only, 24 kHz mono FLAC). The audio and the
# job's ledger go to downloads/SOURCE/audio/PART/, outside the rule's output (the part's status
# table), so what a failed or killed job got survives: the rerun skips what is on disk and what
# is gone for good, and retries the transient failures. Local rules, like every download.
rule download_segment_list:
    output:
        f"{D}/downloads/{{source}}/lists/{{filename}}",
    params:
        url=segment_list_url,
        checksum=segment_list_checksum,
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_segment_list/{{source}}/{{filename}}.log",
    shell:
        "python -m encodecmae download --url {params.url:q} --checksum {params.checksum} --out {output} > {log} 2>&1"


rule download_youtube_part:
    input:
        segment_list_files,
    output:
        f"{D}/downloads/{{source}}/status/{{part}}.tsv",
    params:
        audio_dir=f"{D}/downloads/{{source}}/audio/{{part}}",
        flags=youtube_flags,
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_youtube_part/{{source}}/{{part}}.log",
    shell:
        # cookies or a proxy, if any, reach yt-dlp through ENCODECMAE_YTDLP_COOKIES and
        # ENCODECMAE_YTDLP_PROXY in the environment, never through the command line or the log
        "python -m encodecmae download-youtube --segment-lists {input} --part {wildcards.part} --audio-dir {params.audio_dir} "
        "--status {output} {params.flags} > {log} 2>&1"


rule list_source:
    input:
        source_input,
    output:
        f"{D}/lists/{{source}}.tsv",
    params:
        source_dir=source_dir,
        n_shards=n_shards,
    resources:
        runtime=list_runtime,
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
        source_manifests,
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
