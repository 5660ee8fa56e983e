# Downstream evaluation: every task embedded with every model (frozen, mean over time of the
# last layer, 4-s chunks), then scored with the HEAR MLP protocol and bootstrap intervals.


rule make_demo_task:
    output:
        directory(f"{D}/tasks/demo/{{task}}"),
    params:
        demo_task_seed=config["demo_task_seed"],
        out_dir=output_parent,
    resources:
        runtime=30,
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/make_demo_task/{{task}}.log",
    shell:
        "python -m encodecmae make-demo-task --name {wildcards.task} --out {params.out_dir} --demo-task-seed {params.demo_task_seed} > {log} 2>&1"


# The paper's HEAR tasks: the 48 kHz tarballs of the HEAR 2021 Zenodo mirror, prepared at 24 kHz
# (the rate of the model and of the authors' HEAR wrapper: the evaluation audio keeps the band up
# to 12 kHz that the model was trained on). A task directory the user already has (path) is
# prepared the same way from its highest rate.
rule download_hear_task:
    output:
        f"{D}/downloads/hear/{{task}}/{{filename}}",
    params:
        url=hear_archive_url,
        checksum=hear_archive_checksum,
    localrule: True
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_hear_task/{{task}}/{{filename}}.log",
    shell:
        "python -m encodecmae download --url {params.url:q} --checksum {params.checksum} --out {output} > {log} 2>&1"


rule prepare_hear_task:
    input:
        hear_task_source_input,
    output:
        directory(f"{D}/tasks/hear/{{task}}"),
    params:
        source=hear_task_source,
        upsample=hear_upsample_flag,
    resources:
        mem_mb=data_resource("resample", task_hours, key="mem_mb"),
        runtime=data_resource("resample", task_hours),
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/prepare_hear_task/{{task}}.log",
    benchmark:
        f"{D}/benchmarks/prepare_hear_task/{{task}}.tsv"
    shell:
        "python -m encodecmae prepare-hear-task --source {params.source} --task {wildcards.task} --out {output} "
        "--sample-rate 24000 {params.upsample} > {log} 2>&1"


rule embed_task:
    input:
        model=f"{R}/models/{{model}}/model.pt",
        task=task_input,
    output:
        f"{R}/embeddings/{{model}}/{{task}}.npz",
    params:
        task_dir=task_param,
        layer=config["hear"]["layer"],
        device=DEVICE,
    threads: COMPUTE["threads"]
    resources:
        mem_mb=model_mem_mb("model"),
        runtime=data_resource("embed", task_hours, "model"),
        gpu=COMPUTE["gpu"],
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/embed_task/{{model}}/{{task}}.log",
    benchmark:
        f"{R}/benchmarks/embed_task/{{model}}/{{task}}.tsv"
    shell:
        "python -m encodecmae embed-task --checkpoint {input.model} --task-dir {params.task_dir} --out {output} "
        "--layer {params.layer} --threads {threads} --device {params.device} > {log} 2>&1"


rule score_task:
    input:
        embeddings=f"{R}/embeddings/{{model}}/{{task}}.npz",
        task=task_input,
    output:
        f"{R}/scores/{{model}}/{{task}}.json",
    params:
        task_dir=task_param,
        max_epochs=config["hear"]["max_epochs"],
        grid_points=config["hear"]["grid_points"],
        bootstrap=config["hear"]["bootstrap"],
        seed=config["hear"]["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/score_task/{{model}}/{{task}}.log",
    benchmark:
        f"{R}/benchmarks/score_task/{{model}}/{{task}}.tsv"
    shell:
        "python -m encodecmae score-task --task-dir {params.task_dir} --embeddings {input.embeddings} --out {output} "
        "--max-epochs {params.max_epochs} --grid-points {params.grid_points} --bootstrap {params.bootstrap} "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
