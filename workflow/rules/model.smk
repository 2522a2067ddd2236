# Stages 5-6: train FiLM, then score it per question type beside the paper's Table 1.
# Commands, inputs, outputs and parameter keys: filmclevr/workflow_stages.py.


# Stage 5: the best-validation checkpoint (models/last.pt, the resume point, is no output).
rule train_model:
    input:
        **stage_input("train_model"),
    output:
        **stage_output("train_model"),
    log:
        "logs/train_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/train_model.tsv"
    threads: all_cores
    resources:
        # One process per GPU: train_model.nproc_per_node > 1 starts torchrun in the stage.
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        **stage_params("train_model"),
    message:
        "train_model: FiLM on {input.shards} -> {output.checkpoint}"
    shell:
        stage_shell("train_model")


# Stage 6: accuracy per paper column, terminal function and family; the results table.
rule evaluate_model:
    input:
        **stage_input("evaluate_model"),
    output:
        **stage_output("evaluate_model"),
    log:
        "logs/evaluate_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/evaluate_model.tsv"
    threads: all_cores
    params:
        **stage_params("evaluate_model"),
    message:
        "evaluate_model: {params.evaluate_model[split]} accuracy -> {output.metrics}"
    shell:
        stage_shell("evaluate_model")
