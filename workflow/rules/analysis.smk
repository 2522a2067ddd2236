# Stage 7: what the FiLM layers learned (paper §4.2-4.3, SPEC §6), from the best checkpoint.


rule analyze_model:
    input:
        code=code(
            "analyze_model",
            "analysis.py",
            "checkpoint.py",
            "distributed.py",
            "evaluate.py",
            "figures.py",
            "model.py",
            "parallel.py",
            "resize.py",
            "shards.py",
            "tokenize.py",
            "paper/analysis.csv",
        ),
        checkpoint=rules.train_model.output.checkpoint,
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
        clevr=rules.get_data.output.root,
    output:
        root=directory("results/analysis"),
        metrics="results/analysis.json",
    log:
        "logs/analyze_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/analyze_model.tsv"
    threads: all_cores
    params:
        section=config["analyze_model"],
        splits=config["get_data"]["splits"],  # the first is the training split
    message:
        "analyze_model: gamma, beta, t-SNE, ablations, maps -> {output.root}"
    shell:
        "python -m stages.analyze_model --params {PARAMS} --checkpoint {input.checkpoint}"
        " --shards {input.shards} --tokens {input.tokens} --clevr {input.clevr}"
        " --out {output.root} --metrics {output.metrics} 2>&1 | tee {log}"
