# EnCodec targets: the codec (downloaded and checksum-verified, or fitted offline), tokens per
# shard, and the per-codebook loss weights gamma_q.


rule download_encodec:
    output:
        f"{D}/encodec/{ENC['url'].rsplit('/', 1)[-1]}",
    params:
        url=ENC["url"],
        sha256_prefix=ENC["sha256_prefix"],
    localrule: True  # a download: runs where Snakemake runs (the internet); a rerun continues it
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_encodec.log",
    shell:
        "python -m encodecmae download --url {params.url} --sha256-prefix {params.sha256_prefix} --out {output} > {log} 2>&1"


rule fit_codebooks:
    input:
        shards=[shard_index(s) for s in SOURCES],
    output:
        f"{D}/encodec/encodec_fitted.pt",
    params:
        shards=shard_dirs(SOURCES),
        n_q=ENC["n_q"],
        codebook_size=ENC["codebook_size"],
        fit_max_frames=ENC["fit_max_frames"],
        seed=ENC["seed"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{D}/logs/fit_codebooks.log",
    benchmark:
        f"{D}/benchmarks/fit_codebooks.tsv"
    shell:
        "python -m encodecmae fit-codebooks --shards {params.shards} --out {output} --n-q {params.n_q} "
        "--codebook-size {params.codebook_size} --fit-max-frames {params.fit_max_frames} --seed {params.seed} > {log} 2>&1"


rule tokenize_shard:
    input:
        manifest=f"{D}/shards/{{source}}/{{shard}}/manifest.csv",
        audio=f"{D}/shards/{{source}}/{{shard}}/audio.npy",
        encodec=ENCODEC_CKPT,
    output:
        f"{D}/tokens/{{source}}/{{shard}}.npy",
    params:
        shard=input_parent("manifest"),
        n_q=ENC["n_q"],
        batch_size=ENC["batch_size"],
        device=DEVICE,
    threads: COMPUTE["threads"]
    resources:
        mem_mb=data_resource("tokenize", shard_hours, key="mem_mb"),
        runtime=data_resource("tokenize", shard_hours),
        gpu=COMPUTE["gpu"],
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{D}/logs/tokenize_shard/{{source}}/{{shard}}.log",
    benchmark:
        f"{D}/benchmarks/tokenize_shard/{{source}}/{{shard}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python -m encodecmae tokenize --shard {params.shard} --checkpoint {input.encodec} "
        "--out {output} --n-q {params.n_q} --batch-size {params.batch_size} --device {params.device} > {log} 2>&1"


# gamma_q estimated from gamma_clips clips (config encodec.gamma: estimate): training rows then read
# results/gamma.json. With a list of weights in the config (config/paper.yaml: the released
# constants), training gets them as settings and nothing asks for this job; `snakemake
# results/gamma.json` still runs it, and the file then also compares the estimate with the list.
rule estimate_gamma:
    input:
        shards=[shard_index(s) for s in SOURCES],
        encodec=ENCODEC_CKPT,
    output:
        f"{R}/gamma.json",
    params:
        shards=shard_dirs(SOURCES),
        gamma_clips=ENC["gamma_clips"],
        n_q=ENC["n_q"],
        seed=ENC["seed"],
        compare="" if ENC["gamma"] == "estimate" else "--compare-with " + " ".join(map(str, ENC["gamma"])),
    resources:
        mem_mb=4000,
        runtime=60,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/estimate_gamma.log",
    shell:
        "python -m encodecmae estimate-gamma --shards {params.shards} --checkpoint {input.encodec} --out {output} "
        "--gamma-clips {params.gamma_clips} --n-q {params.n_q} --seed {params.seed} {params.compare} > {log} 2>&1"


rule index_tokens:
    input:
        token_files,
    output:
        f"{D}/tokens/{{source}}.index",
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/index_tokens/{{source}}.log",
    shell:
        "python -m encodecmae index-files --files {input} --out {output} > {log} 2>&1"
