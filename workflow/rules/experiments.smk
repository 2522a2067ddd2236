# Stages 8-9: the paper's experiments (Tables 2 and 3), one job per experiment x seed on the
# data stages' shards, then the table. Not in the default target: `snakemake experiments`.
# Commands, inputs, outputs, parameter keys and the matrix: filmclevr/workflow_stages.py.


rule run_experiment:
    input:
        **stage_input("run_experiment"),
    output:
        **stage_output("run_experiment"),
    log:
        "logs/experiments/{name}-seed{seed}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/run_experiment/{name}/seed{seed}.tsv"
    threads: all_cores
    resources:
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        **stage_params("run_experiment"),
    message:
        "run_experiment: {wildcards.name} seed {wildcards.seed} -> {output.run}"
    shell:
        stage_shell("run_experiment")


rule collect_experiments:
    input:
        **stage_input("collect_experiments"),
    output:
        **stage_output(
            "collect_experiments",
            shown={
                "figure": shown_in_report(
                    "experiments.rst",
                    "5. The paper's experiments",
                    labels={"figure": "changes in accuracy, ours beside the paper's"},
                ),
            },
        ),
    log:
        "logs/experiments/collect.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/collect_experiments.tsv"
    params:
        **stage_params("collect_experiments"),
    message:
        "collect_experiments -> {output.table_md}"
    shell:
        stage_shell("collect_experiments")


rule experiments:
    input:
        rules.collect_experiments.output,
