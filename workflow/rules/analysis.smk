# Stage 7: what the FiLM layers learned (paper §4.2-4.3, SPEC §6), from the best checkpoint.
# Command, inputs, outputs and parameter keys: filmclevr/workflow_stages.py.


rule analyze_model:
    input:
        **stage_input("analyze_model"),
    output:
        **stage_output(
            "analyze_model",
            shown={
                "root": shown_in_report(
                    "analysis.rst",
                    "3. What FiLM learned",
                    labels={"figure": "{figure}"},
                    # the paper's figures (not the single examples' maps beside them)
                    patterns=["{figure,examples|film_histograms|tsne|ablations}.png"],
                ),
            },
        ),
    log:
        "logs/analyze_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/analyze_model.tsv"
    threads: all_cores
    params:
        **stage_params("analyze_model"),
    message:
        "analyze_model: gamma, beta, t-SNE, ablations, maps -> {output.root}"
    shell:
        stage_shell("analyze_model")
