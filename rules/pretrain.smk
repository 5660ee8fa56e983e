# Training of every experiment row: EnCodec-target pretraining, self-training from a teacher's
# clusters, and untrained baselines (steps 0). Step checkpoints live in a directory named by a
# hash of the run's settings, and the command always passes --resume: a job killed by the
# scheduler continues from its last checkpoint when the workflow runs again, while a changed
# setting starts a fresh run.


rule train_mae:
    input:
        unpack(train_inputs),
    output:
        model=f"{R}/models/{{model}}/model.pt",
        metrics=f"{R}/models/{{model}}/metrics.csv",
    params:
        shards=input_parents("manifests"),
        flags=train_params,
        ckpt_dir=checkpoint_dir,
    threads: 2
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/train_mae/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_mae/{{model}}.tsv"
    shell:
        "encodecmae train --shards {params.shards} --targets {input.targets} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --metrics {params.ckpt_dir}/metrics.csv --threads {threads} "
        "{params.flags} --resume > {log} 2>&1 && cp {params.ckpt_dir}/metrics.csv {output.metrics}"
