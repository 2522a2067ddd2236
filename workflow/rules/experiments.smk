# Stages 8-9: the paper's experiments (Tables 2 and 3), one job per experiment x seed on the
# data stages' shards, then the table. Not in the default target: `snakemake experiments`.
import re

EXPERIMENTS = config["experiments"]["names"]
SEEDS = config["experiments"]["seeds"]


# Names match the schema's ^[A-Za-z0-9_]+$; escaped all the same, as each is a regex here.
wildcard_constraints:
    name="|".join(map(re.escape, EXPERIMENTS)) or "no-experiment",
    seed=r"\d+",


rule run_experiment:
    input:
        code=code(
            "run_experiment",
            "checkpoint.py",
            "distributed.py",
            "evaluate.py",
            "experiments.py",
            "figures.py",
            "model.py",
            "shards.py",
            "tokenize.py",
            "train.py",
        ),
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
        init=init_checkpoint(
            {**config["train_model"], **config["experiments"]["train_model"]}
        ),
    output:
        run=directory("results/experiments/runs/{name}/seed{seed}"),
    log:
        "logs/experiments/{name}-seed{seed}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/run_experiment/{name}/seed{seed}.tsv"
    threads: all_cores
    resources:
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        model=config["model"],
        train=config["train_model"],
        sweep=config["experiments"]["train_model"],
        image_size=config["resize_images"]["image_size"],
    message:
        "run_experiment: {wildcards.name} seed {wildcards.seed} -> {output.run}"
    shell:
        "python -m stages.run_experiment --params {PARAMS} --name {wildcards.name}"
        " --seed {wildcards.seed} --shards {input.shards} --tokens {input.tokens}"
        " --out {output.run} --last models/experiments/{wildcards.name}/seed{wildcards.seed}/last.pt"
        " 2>&1 | tee {log}"


rule collect_experiments:
    input:
        code=code(
            "collect_experiments",
            "checkpoint.py",
            "distributed.py",
            "evaluate.py",
            "experiments.py",
            "figures.py",
            "model.py",
            "shards.py",
            "tokenize.py",
            "train.py",
            "paper/table2_ablations_val.csv",
            "paper/table3_resblocks_val.csv",
        ),
        runs=expand(
            "results/experiments/runs/{name}/seed{seed}", name=EXPERIMENTS, seed=SEEDS
        ),
    output:
        table_md="results/experiments/table.md",
        table_csv="results/experiments/table.csv",
        figure="results/experiments/deltas.png",
    log:
        "logs/experiments/collect.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/collect_experiments.tsv"
    params:
        section=config["experiments"],
    message:
        "collect_experiments -> {output.table_md}"
    shell:
        "python -m stages.collect_experiments --params {PARAMS} --runs results/experiments/runs"
        " --table-md {output.table_md} --table-csv {output.table_csv} --figure {output.figure}"
        " 2>&1 | tee {log}"


rule experiments:
    input:
        rules.collect_experiments.output,
