# The SUPERB ASR evaluation (superb_asr_protocol.md; the paper's Table 2): every layer of each
# frozen model on the speech of train / dev / test (37.5 Hz), a BiLSTM-CTC downstream trained on a
# learned mix of them, selected on dev, decoded on test greedily and with a lexicon beam search
# under the n-gram LM. Data: LibriSpeech train-clean-100, dev-clean and test-clean, the official
# 4-gram LM and the letter lexicon (downloads checked against the checksums published; local
# rules; archives kept in download_cache/ so that a killed download continues), or the demo's
# synthetic speech with an LM built from its training transcripts.


rule download_librispeech:
    output:
        directory(f"{D}/asr/librispeech/{{split}}"),
    params:
        url=librispeech_url,
        checksum=librispeech_checksum,
        cache=f"{D}/download_cache/librispeech",
    localrule: True
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_librispeech/{{split}}.log",
    shell:
        "python -m encodecmae download-archives --archive {params.url:q} {params.checksum} --out {output} "
        "--cache {params.cache} > {log} 2>&1"


rule download_asr_file:
    output:
        f"{D}/asr/{{kind}}/{{filename}}",
    wildcard_constraints:
        kind="lm|lexicon",
    params:
        url=asr_file_url,
        checksum=asr_file_checksum,
    localrule: True
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_asr_file/{{kind}}/{{filename}}.log",
    shell:
        "python -m encodecmae download --url {params.url:q} --checksum {params.checksum} --out {output} > {log} 2>&1"



rule make_demo_asr:
    output:
        directory(f"{D}/asr/demo"),
    params:
        seed=ASR.get("demo_seed", 0),
        minutes=ASR.get("demo_minutes", 4),
    resources:
        runtime=30,
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/make_demo_asr.log",
    shell:
        "python -m encodecmae make-demo-asr --out {output} --seed {params.seed} --minutes {params.minutes} > {log} 2>&1"


rule extract_asr_features:
    input:
        model=f"{R}/models/{{model}}/model.pt",
        speech=asr_split_input,
    output:
        # temporary: removed once the downstream is trained and decoded (every layer at 37.5 Hz
        # in float16 is ~230 GB per base-size model on train-clean-100), never versioned; a
        # later change of the downstream or decoding settings extracts them again
        temp(directory(f"{D}/asr_features/{{model}}/{{role}}")),
    params:
        split_dir=asr_split_dir,
        layer_mix=ASR.get("layer_mix"),
        device=DEVICE,
    threads: COMPUTE["threads"]
    resources:
        mem_mb=model_mem_mb("model"),
        runtime=data_resource("embed", asr_role_hours, "model"),
        gpu=COMPUTE["gpu"],
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/extract_asr_features/{{model}}/{{role}}.log",
    benchmark:
        f"{R}/benchmarks/extract_asr_features/{{model}}/{{role}}.tsv"
    shell:
        "python -m encodecmae extract-asr-features --checkpoint {input.model} --split-dir {params.split_dir} "
        "--out {output} --layer-mix {params.layer_mix} --device {params.device} --threads {threads} > {log} 2>&1"


rule train_asr:
    input:
        train=f"{D}/asr_features/{{model}}/train",
        dev=f"{D}/asr_features/{{model}}/dev",
    output:
        model=f"{R}/asr/{{model}}/downstream.pt",
        metrics=f"{R}/asr/{{model}}/metrics.csv",
    params:
        ckpt_dir=f"{R}/asr/{{model}}/checkpoints",
        steps=ASR.get("steps"),
        batch_size=ASR.get("batch_size"),
        lr=ASR.get("lr"),
        eval_every=ASR.get("eval_every"),
        proj=ASR.get("proj"),
        hidden=ASR.get("hidden"),
        lstm_layers=ASR.get("lstm_layers"),
        seed=ASR.get("seed"),
        workers=2 * asr_train_resources(ASR)["gpu"],  # batch loaders beside a GPU; none on CPU
        masks=f"--time-mask-width {ASR.get('time_mask_width')} --freq-mask-width {ASR.get('freq_mask_width')} "
        f"--time-warp {ASR.get('time_warp')}",
        device=DEVICE,
    threads: asr_train_resource("threads")
    resources:
        gpu=asr_train_resource("gpu"),
        mem_mb=asr_train_resource("mem_mb"),
        runtime=asr_train_resource("runtime"),
    # a job stopped before its last step (time limit) exits with code 75 after a checkpoint and
    # is resubmitted, like pretraining
    retries: asr_train_resources(ASR)["segments"] if ASR_MODELS and asr_train_resources(ASR)["segments"] > 1 else None
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/train_asr/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/train_asr/{{model}}.tsv"
    shell:
        "python -m encodecmae train-asr --train {input.train} --dev {input.dev} --out {output.model} "
        "--ckpt-dir {params.ckpt_dir} --metrics {output.metrics} --steps {params.steps} --batch-size {params.batch_size} "
        "--lr {params.lr} --eval-every {params.eval_every} --proj {params.proj} --hidden {params.hidden} "
        "--lstm-layers {params.lstm_layers} "
        "--seed {params.seed} {params.masks} --device {params.device} --threads {threads} --workers {params.workers} --resume "
        "${{SLURM_JOB_ID:+--stop-after $(( {resources.runtime} * 60 - ({resources.runtime} > 6 ? 300 : {resources.runtime} * 45) ))}} "
        "> {log} 2>&1"


rule decode_asr:
    input:
        unpack(asr_lm_inputs),
        model=f"{R}/asr/{{model}}/downstream.pt",
        test=f"{D}/asr_features/{{model}}/test",
    output:
        f"{R}/asr/{{model}}/scores.json",
    params:
        lm=asr_lm_paths,
        device=DEVICE,
    resources:
        # KenLM holds the whole LM in memory (the official 4-gram is a 1.4 GB gzipped ARPA; its
        # footprint is not measured here)
        mem_mb=2000 if ASR.get("demo") else 16000,
        runtime=120,
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/decode_asr/{{model}}.log",
    shell:
        "python -m encodecmae decode-asr --model {input.model} --features {input.test} {params.lm} --out {output} "
        "--beam 5 --beam-threshold 25 --lm-weight 2 --word-score -1 --device {params.device} > {log} 2>&1"
