# Stages 12-15: CLEVR-Humans (paper Table 4) on top of the CLEVR model (train_model): its
# question files (downloaded, or a stand-in about the mini-CLEVR tree), their vocabulary and
# shards, the fine-tuning, the report; one job each per humans.sources entry. None but in
# Humans profiles (config/clevr-humans-mini.yaml, config/clevr-humans.yaml).
# Commands, inputs, outputs, parameter keys and the matrix: filmclevr/workflow_stages.py.


rule get_humans:
    input:
        **stage_input("get_humans"),
    output:
        **stage_output("get_humans"),
    log:
        "logs/humans/get-{source}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/get_humans/{source}.tsv"
    params:
        **stage_params("get_humans"),
    message:
        "get_humans: {wildcards.source} -> {output.root}"
    shell:
        stage_shell("get_humans")


rule prepare_humans:
    input:
        **stage_input("prepare_humans"),
    output:
        **stage_output("prepare_humans"),
    log:
        "logs/humans/prepare-{source}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/prepare_humans/{source}.tsv"
    params:
        **stage_params("prepare_humans"),
    message:
        "prepare_humans: {wildcards.source} -> {output.tokens}, {output.shards}"
    shell:
        stage_shell("prepare_humans")


rule finetune_humans:
    input:
        **stage_input("finetune_humans"),
    output:
        **stage_output("finetune_humans"),
    log:
        "logs/humans/finetune-{source}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/finetune_humans/{source}.tsv"
    threads: all_cores
    resources:
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        **stage_params("finetune_humans"),
    message:
        "finetune_humans: {wildcards.source} -> {output.model}"
    shell:
        stage_shell("finetune_humans")


rule report_humans:
    input:
        **stage_input("report_humans"),
    output:
        **stage_output("report_humans"),
    log:
        "logs/humans/report-{source}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/report_humans/{source}.tsv"
    threads: all_cores
    params:
        **stage_params("report_humans"),
    message:
        "report_humans: {wildcards.source} -> {output.table}"
    shell:
        stage_shell("report_humans")


rule humans:
    input:
        stage_targets("report_humans"),
