# The authors' released checkpoints (docs/released-models.md): v2, the paper's models
# (lpepino/encodecmae-v2, NAME.pt), and v1, the first version's EC->EC models
# (lpepino/encodecmae-SIZE, model.pt). Each is downloaded to data/released/NAME/model.pt (checksum-
# verified when config `released.NAME.sha256` is given), converted into this package's model
# (the converter reads the release, input, sizes, heads and streams from the file itself), then
# embedded and scored by the same HEAR and ASR rules as the models trained here.


rule download_released:
    output:
        f"{D}/released/{{release}}/model.pt",
    params:
        url=released_url,
        checksum=released_checksum,
    localrule: True  # a download: runs where Snakemake runs (the internet); a rerun continues it
    conda:
        "../envs/data.yaml"
    log:
        f"{D}/logs/download_released/{{release}}.log",
    shell:
        "python -m encodecmae download --url {params.url:q} --checksum {params.checksum} --out {output} > {log} 2>&1"


rule import_released:
    input:
        released_download,
    output:
        f"{R}/models/{{model}}/model.pt",
    wildcard_constraints:
        model=one_of(RELEASED_ROWS),
    params:
        release=release_of,
        url=released_url,
    resources:
        mem_mb=model_mem_mb("model"),
        runtime=30,
    conda:
        "../envs/torch.yaml"
    log:
        f"{R}/logs/import_released/{{model}}.log",
    shell:
        "python -m encodecmae import-released --checkpoint {input} --out {output} --name {params.release} "
        "--url {params.url:q} > {log} 2>&1"
