# Stages 5-6: train FiLM, then score it per question type beside the paper's Table 1.


# Stage 5: the best-validation checkpoint. models/last.pt is deliberately no output: the
# engines delete outputs before a job starts, and last.pt is what a killed run resumes from.
rule train_model:
    input:
        code=code(
            "train_model",
            "checkpoint.py",
            "curriculum.py",
            "distributed.py",
            "figures.py",
            "model.py",
            "shards.py",
            "tokenize.py",
            "train.py",
        ),
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
        init=init_checkpoint(config["train_model"]),
    output:
        checkpoint="models/film.pt",
        sidecar="models/film.json",
        log_dir=directory("results/train"),
        curves="results/learning_curves.png",
    log:
        "logs/train_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/train_model.tsv"
    threads: all_cores
    resources:
        # One process per GPU: train_model.nproc_per_node > 1 starts torchrun in the stage.
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        model=config["model"],
        train=config["train_model"],
        curriculum=config.get("curriculum", []),  # absent in profiles older than it
        image_size=config["resize_images"]["image_size"],  # the model's input size
    message:
        "train_model: FiLM on {input.shards} -> {output.checkpoint}"
    shell:
        "python -m stages.train_model --params {PARAMS} --shards {input.shards}"
        " --vocab {input.tokens}/vocab.json --out {output.checkpoint} --last models/last.pt"
        " --log-dir {output.log_dir} --curves {output.curves} 2>&1 | tee {log}"


# Stage 6: accuracy per paper column, terminal function and family; the results table.
rule evaluate_model:
    input:
        code=code(
            "evaluate_model",
            "checkpoint.py",
            "distributed.py",
            "evaluate.py",
            "figures.py",
            "model.py",
            "shards.py",
            "tokenize.py",
            "paper/table1_clevr_test.csv",
        ),
        checkpoint=rules.train_model.output.checkpoint,
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
    output:
        metrics="results/metrics.json",
        table_md="results/table.md",
        table_csv="results/table.csv",
        figure="results/accuracy.png",
        predictions=directory("data/predictions"),
    log:
        "logs/evaluate_model.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/evaluate_model.tsv"
    threads: all_cores
    params:
        section=config["evaluate_model"],
        profile=config["profile"],
        source=config["get_data"]["source"],
    message:
        "evaluate_model: {params.section[split]} accuracy -> {output.metrics}"
    shell:
        "python -m stages.evaluate_model --params {PARAMS} --checkpoint {input.checkpoint}"
        " --shards {input.shards} --tokens {input.tokens} --metrics {output.metrics}"
        " --table-md {output.table_md} --table-csv {output.table_csv} --figure {output.figure}"
        " --predictions {output.predictions} 2>&1 | tee {log}"
