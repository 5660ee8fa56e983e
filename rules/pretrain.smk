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
    wildcard_constraints:
        model=one_of(n for n in EXPERIMENTS if n not in RELEASED_ROWS),
    params:
        shards=train_shards,
        targets=train_targets,
        settings=train_settings,
        input_flags=train_input_flags,
        ckpt_dir=checkpoint_dir,
    threads: train_resource("threads")
    resources:
        gpu=train_resource("gpu"),
        cpus_per_gpu=train_resource("cpus_per_gpu"),
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
        nodes=1,  # torchrun --standalone: every rank on the job's one node
    # a run of several segments (encodecmae.workflow.resources.segments): each job but the last
    # exits with code 75 after a checkpoint and is resubmitted; None: the profile's retries
    retries: TRAIN_SEGMENTS if TRAIN_SEGMENTS > 1 else None
    priority: CHAIN_PRIORITY
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/train_mae/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_mae/{{model}}.tsv"
    shell:
        # Several GPUs: one torchrun rank per GPU (DDP), never more ranks than GPUs the job sees
        # (the global batch stays the same: each rank's share grows), the job's cores split
        # between them.
        "ranks={resources.gpu}; "
        "if [ $ranks -gt 1 ]; then "
        "ranks=$(python -c 'import sys, torch; print(max(1, min(int(sys.argv[1]), torch.cuda.device_count())))' $ranks); fi; "
        "if [ $ranks -gt 1 ]; then "
        "set -- python -m torch.distributed.run --standalone --nproc_per_node $ranks -m encodecmae; "
        "else set -- python -m encodecmae; fi; "
        '"$@" train --shards {params.shards} --targets {params.targets} --out {output.model} '
        "--ckpt-dir {params.ckpt_dir} --metrics {params.ckpt_dir}/metrics.csv "
        "--threads $(( $ranks > 1 ? ({threads} + $ranks - 1) / $ranks : {threads} )) "
        # under SLURM: stop with a checkpoint before the time limit (5 min before; a job of a few
        # minutes after a quarter of it)
        "${{SLURM_JOB_ID:+--stop-after $(( {resources.runtime} * 60 - ({resources.runtime} > 6 ? 300 : {resources.runtime} * 45) ))}} "
        "{params.settings} {params.input_flags} --resume > {log} 2>&1 && cp {params.ckpt_dir}/metrics.csv {output.metrics}"
