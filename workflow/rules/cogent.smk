# Stages 10-11: CLEVR-CoGenT (paper §4.5) on top of the A model (train_model on trainA): one
# fine-tuning job per cogent.transfer split x cogent.finetune_questions size, then the report.
# None in CLEVR profiles (cogent.transfer: []); config/cogent-mini.yaml, config/cogent.yaml.
# Commands, inputs, outputs, parameter keys and the matrix: filmclevr/workflow_stages.py.


rule finetune_cogent:
    input:
        **stage_input("finetune_cogent"),
    output:
        **stage_output("finetune_cogent"),
    log:
        "logs/cogent/finetune-{split}-{questions}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/finetune_cogent/{split}/{questions}.tsv"
    threads: all_cores
    resources:
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        **stage_params("finetune_cogent"),
    message:
        "finetune_cogent: {wildcards.questions} questions of {wildcards.split} -> {output.run}"
    shell:
        stage_shell("finetune_cogent")


rule report_cogent:
    input:
        **stage_input("report_cogent"),
    output:
        **stage_output(
            "report_cogent",
            shown={
                "out": shown_in_report(
                    "cogent.rst",
                    "4. CLEVR-CoGenT",
                    subcategory="transfer to {split}",
                    labels={"figure": "{figure}", "transfer split": "{split}"},
                    patterns=["{figure}.png"],
                ),
            },
        ),
    log:
        "logs/cogent/report-{split}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/report_cogent/{split}.tsv"
    threads: all_cores
    params:
        **stage_params("report_cogent"),
    message:
        "report_cogent: {wildcards.split} -> {output.out}"
    shell:
        stage_shell("report_cogent")


rule cogent:
    input:
        stage_targets("report_cogent"),
