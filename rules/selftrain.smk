# Self-training targets in three steps, as the HuBERT recipe: dump teacher activations of a
# seeded sample of crops (one job per teacher), fit k-means, assign cluster ids per shard. The student rows
# (targets: {clusters_of: TEACHER}) train on them in pretrain.smk.


rule dump_teacher_features:
    input:
        model=f"{R}/models/{{teacher}}/model.pt",
        shards=teacher_shard_indexes,
    output:
        temp(f"{D}/selftrain/{{teacher}}/features.npy"),
    params:
        shards=teacher_shards,
        crops_per_shard=crops_per_shard,
        frames_per_crop=config["selftraining"]["frames_per_crop"],
        seed=config["selftraining"]["seed"],
        device=DEVICE,
    threads: COMPUTE["threads"]
    resources:
        mem_mb=model_mem_mb("teacher"),
        runtime=data_resource("embed", crop_hours, "teacher"),
        gpu=COMPUTE["gpu"],
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{D}/logs/dump_teacher_features/{{teacher}}.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m encodecmae dump-features --checkpoint {input.model} --shards {params.shards} "
        "--out {output} --crops-per-shard {params.crops_per_shard} --frames-per-crop {params.frames_per_crop} "
        "--seed {params.seed} --device {params.device} > {log} 2>&1"


rule fit_kmeans:
    input:
        f"{D}/selftrain/{{teacher}}/features.npy",
    output:
        f"{D}/selftrain/{{teacher}}/kmeans.npz",
    params:
        k=config["selftraining"]["k"],
        n_frames=config["selftraining"]["n_frames"],
        seed=config["selftraining"]["seed"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{D}/logs/fit_kmeans/{{teacher}}.log",
    benchmark:
        f"{D}/benchmarks/fit_kmeans/{{teacher}}.tsv"
    shell:
        "python -m encodecmae fit-kmeans --features {input} --out {output} --k {params.k} --n-frames {params.n_frames} "
        "--seed {params.seed} > {log} 2>&1"


rule assign_clusters:
    input:
        model=f"{R}/models/{{teacher}}/model.pt",
        kmeans=f"{D}/selftrain/{{teacher}}/kmeans.npz",
        manifest=f"{D}/shards/{{source}}/{{shard}}/manifest.csv",
        audio=f"{D}/shards/{{source}}/{{shard}}/audio.npy",
    output:
        f"{D}/selftrain/{{teacher}}/clusters/{{source}}/{{shard}}.npy",
    params:
        shard=input_parent("manifest"),
        device=DEVICE,
    threads: COMPUTE["threads"]
    resources:
        mem_mb=data_resource("assign", None, "teacher", "mem_mb"),
        runtime=data_resource("assign", shard_hours, "teacher"),
        gpu=COMPUTE["gpu"],
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{D}/logs/assign_clusters/{{teacher}}/{{source}}/{{shard}}.log",
    benchmark:
        f"{D}/benchmarks/assign_clusters/{{teacher}}/{{source}}/{{shard}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python -m encodecmae assign-clusters --checkpoint {input.model} --kmeans {input.kmeans} "
        "--shard {params.shard} --out {output} --device {params.device} > {log} 2>&1"


rule index_clusters:
    input:
        cluster_files,
    output:
        f"{D}/selftrain/{{teacher}}/clusters/{{source}}.index",
    localrule: True
    priority: CHAIN_PRIORITY
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/index_clusters/{{teacher}}/{{source}}.log",
    shell:
        "python -m encodecmae index-files --files {input} --out {output} > {log} 2>&1"
