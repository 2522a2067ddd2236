# Stages 1-4: the data half of the workflow. Outputs under data/, never committed. Commands,
# inputs, outputs and parameter keys: filmclevr/workflow_stages.py.


# Stage 1: the CLEVR release tree, generated (mini-CLEVR) or downloaded (CLEVR v1.0).
rule get_data:
    input:
        **stage_input("get_data"),
    output:
        **stage_output("get_data"),
    log:
        "logs/get_data.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/get_data.tsv"
    threads: all_cores
    params:
        **stage_params("get_data"),
    message:
        "get_data: {params.get_data[source]} CLEVR release tree -> {output.root}"
    shell:
        stage_shell("get_data")


# Stage 2: square RGB images at the model's input size.
rule resize_images:
    input:
        **stage_input("resize_images"),
    output:
        **stage_output("resize_images"),
    log:
        "logs/resize_images.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/resize_images.tsv"
    threads: all_cores
    params:
        **stage_params("resize_images"),
    message:
        "resize_images: {params.resize_images_image_size}x{params.resize_images_image_size}"
        " -> {output.root}"
    shell:
        stage_shell("resize_images")


# Stage 3: clevr-iep vocabulary (built on the first, training split) and encoded questions.
rule tokenize_questions:
    input:
        **stage_input("tokenize_questions"),
    output:
        **stage_output("tokenize_questions"),
    log:
        "logs/tokenize_questions.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/tokenize_questions.tsv"
    params:
        **stage_params("tokenize_questions"),
    message:
        "tokenize_questions -> {output.root}"
    shell:
        stage_shell("tokenize_questions")


# Stage 4: WebDataset tar shards, one sample per image with all its questions.
rule write_shards:
    input:
        **stage_input("write_shards"),
    output:
        **stage_output("write_shards"),
    log:
        "logs/write_shards.log",
    benchmark:  # wall time, peak RSS (max_rss, MB) and CPU time of the job
        "logs/benchmarks/write_shards.tsv"
    params:
        **stage_params("write_shards"),
    message:
        "write_shards -> {output.root}"
    shell:
        stage_shell("write_shards")
