# Stages 10-11: CLEVR-CoGenT (paper §4.5) on top of the A model (train_model on trainA): one
# fine-tuning job per cogent.transfer split x cogent.finetune_questions size, then the report.
# None in CLEVR profiles (cogent.transfer: []); config/cogent-mini.yaml, config/cogent.yaml.
import re

TRANSFER = config["cogent"]["transfer"]
FINETUNE_QUESTIONS = config["cogent"]["finetune_questions"]


wildcard_constraints:
    split="|".join(map(re.escape, TRANSFER)) or "no-split",
    questions=r"\d+",


rule finetune_cogent:
    input:
        code=code(
            "finetune_cogent",
            "analysis.py",
            "checkpoint.py",
            "cogent.py",
            "distributed.py",
            "evaluate.py",
            "figures.py",
            "model.py",
            "parallel.py",
            "resize.py",
            "shards.py",
            "tokenize.py",
            "train.py",
        ),
        checkpoint=rules.train_model.output.checkpoint,
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
    output:
        run=directory("results/cogent/finetune/{split}/{questions}"),
    log:
        "logs/cogent/finetune-{split}-{questions}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/finetune_cogent/{split}/{questions}.tsv"
    threads: all_cores
    resources:
        gpu=config["train_model"].get("nproc_per_node", 1),
    params:
        train=config["train_model"],
        cogent=config["cogent"],
        evaluate=config["evaluate_model"]["batch_size"],
        splits=config["get_data"]["splits"],
    message:
        "finetune_cogent: {wildcards.questions} questions of {wildcards.split} -> {output.run}"
    shell:
        "python -m stages.finetune_cogent --params {PARAMS} --split {wildcards.split}"
        " --questions {wildcards.questions} --checkpoint {input.checkpoint}"
        " --shards {input.shards} --tokens {input.tokens} --out {output.run}"
        " --last models/cogent/{wildcards.split}/{wildcards.questions}/last.pt"
        " 2>&1 | tee {log}"


rule report_cogent:
    input:
        code=code(
            "report_cogent",
            "analysis.py",
            "checkpoint.py",
            "cogent.py",
            "distributed.py",
            "evaluate.py",
            "figures.py",
            "model.py",
            "parallel.py",
            "resize.py",
            "shards.py",
            "tokenize.py",
            "train.py",
            "paper/analysis.csv",
            "paper/cogent.csv",
        ),
        checkpoint=rules.train_model.output.checkpoint,
        shards=rules.write_shards.output.root,
        tokens=rules.tokenize_questions.output.root,
        clevr=rules.get_data.output.root,
        runs=expand(
            "results/cogent/finetune/{{split}}/{questions}",
            questions=FINETUNE_QUESTIONS,
        ),
    output:
        out=directory("results/cogent/{split}"),
        metrics="results/cogent/{split}.json",
    log:
        "logs/cogent/report-{split}.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/report_cogent/{split}.tsv"
    threads: all_cores
    params:
        cogent=config["cogent"],
        evaluate=config["evaluate_model"]["batch_size"],
        splits=config["get_data"]["splits"],
        train=config["train_model"],  # its device
    message:
        "report_cogent: {wildcards.split} -> {output.out}"
    shell:
        "python -m stages.report_cogent --params {PARAMS} --split {wildcards.split}"
        " --checkpoint {input.checkpoint} --shards {input.shards} --tokens {input.tokens}"
        " --clevr {input.clevr} --finetune results/cogent/finetune/{wildcards.split}"
        " --out {output.out} --metrics {output.metrics} 2>&1 | tee {log}"


rule cogent:
    input:
        expand(rules.report_cogent.output, split=TRANSFER),
