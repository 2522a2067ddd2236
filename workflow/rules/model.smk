# Stages 5-6: train FiLM, then score it per question type beside the paper's Table 1; beside
# 6, the test splits' predictions to submit (CLEVR's test answers are private).
# Commands, inputs, outputs and parameter keys: filmclevr/workflow_stages.py.
from filmclevr.clevr import is_test_split


# Stage 5: the best-validation checkpoint (models/last.pt, the resume point, is no output).
rule train_model:
    input:
        **stage_input("train_model"),
    output:
        **stage_output(
            "train_model",
            shown={
                "curves": shown_in_report(
                    "learning_curves.rst",
                    "2. Learning curves",
                    labels={"figure": "loss and accuracy per epoch"},
                ),
            },
        ),
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
        **stage_output(
            "evaluate_model",
            shown={
                "table_html": shown_in_report(
                    "results_table.rst",
                    "1. Results",
                    labels={"result": "results table beside the paper's Table 1"},
                ),
                "figure": shown_in_report(
                    "accuracy.rst",
                    "1. Results",
                    labels={"result": "accuracy per question type"},
                ),
                "curve_figure": shown_in_report(
                    "learning_curve_vs_paper.rst",
                    "2. Learning curves",
                    labels={"figure": "validation accuracy beside the official curve"},
                ),
            },
        ),
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


# Beside stage 6: per test split, the predicted answers as CLEVR's authors score them (one per
# line, in question order), with a manifest of the model and data they came from.
rule submit_test:
    input:
        **stage_input("submit_test"),
    output:
        **stage_output("submit_test"),
    log:
        "logs/submit_test.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/submit_test.tsv"
    threads: all_cores
    params:
        **stage_params("submit_test"),
    message:
        "submit_test: the test splits' answers -> {output.root}"
    shell:
        stage_shell("submit_test")


# The default target's submission: only where the profile has a test split, so a profile
# without one does not run a stage with nothing to write.
rule submission:
    input:
        (
            rules.submit_test.output
            if any(map(is_test_split, config["get_data"]["splits"]))
            else []
        ),
