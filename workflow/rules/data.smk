# Stages 1-4: the data half of the workflow. Outputs under data/, never committed.


# Stage 1: the CLEVR release tree, generated (mini-CLEVR) or downloaded (CLEVR v1.0).
rule get_data:
    input:
        code=code(
            "get_data",
            "download.py",
            "executor.py",
            "parallel.py",
            "tokenize.py",
            "mini/__init__.py",
            "mini/clevr_questions.py",
            "mini/clevr_templates.json",
            "mini/generate.py",
            "mini/questions.py",
            "mini/render.py",
            "mini/render_clevr.py",
            "mini/scenes.py",
        ),
    output:
        root=directory("data/clevr"),
    log:
        "logs/get_data.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/get_data.tsv"
    threads: all_cores
    params:
        section=config["get_data"],
    message:
        "get_data: {params.section[source]} CLEVR release tree -> {output.root}"
    shell:
        "python -m stages.get_data --params {PARAMS} --out {output.root}"
        " --workers {threads} 2>&1 | tee {log}"


# Stage 2: square RGB images at the model's input size.
rule resize_images:
    input:
        code=code("resize_images", "parallel.py", "resize.py"),
        clevr=rules.get_data.output.root,
    output:
        root=directory("data/resized"),
    log:
        "logs/resize_images.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/resize_images.tsv"
    threads: all_cores
    params:
        size=config["resize_images"]["image_size"],
        splits=config["get_data"]["splits"],
    message:
        "resize_images: {params.size}x{params.size} -> {output.root}"
    shell:
        "python -m stages.resize_images --params {PARAMS} --clevr {input.clevr}"
        " --out {output.root} --workers {threads} 2>&1 | tee {log}"


# Stage 3: clevr-iep vocabulary (built on the first, training split) and encoded questions.
rule tokenize_questions:
    input:
        code=code("tokenize_questions", "tokenize.py"),
        clevr=rules.get_data.output.root,
    output:
        root=directory("data/tokens"),
    log:
        "logs/tokenize_questions.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/tokenize_questions.tsv"
    params:
        section=config["tokenize_questions"],
        splits=config["get_data"]["splits"],
    message:
        "tokenize_questions -> {output.root}"
    shell:
        "python -m stages.tokenize_questions --params {PARAMS} --clevr {input.clevr}"
        " --out {output.root} 2>&1 | tee {log}"


# Stage 4: WebDataset tar shards, one sample per image with all its questions.
rule write_shards:
    input:
        code=code("write_shards", "tokenize.py", "shards.py"),
        resized=rules.resize_images.output.root,
        tokens=rules.tokenize_questions.output.root,
    output:
        root=directory("data/shards"),
    log:
        "logs/write_shards.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/write_shards.tsv"
    params:
        section=config["write_shards"],
        splits=config["get_data"]["splits"],
    message:
        "write_shards -> {output.root}"
    shell:
        "python -m stages.write_shards --params {PARAMS} --resized {input.resized}"
        " --tokens {input.tokens} --out {output.root} 2>&1 | tee {log}"
