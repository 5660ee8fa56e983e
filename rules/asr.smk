# The SUPERB ASR evaluation's data (superb_asr_protocol.md): LibriSpeech train-clean-100,
# dev-clean and test-clean, the official 4-gram language model and the lexicon of the beam
# search, each checked against the checksum OpenSLR publishes. Local rules, like every download;
# archives are kept in download_cache/ so that a killed download continues (HTTP Range).


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

