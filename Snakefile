# FiLM on CLEVR: get_data -> resize_images -> tokenize_questions -> write_shards
#                -> train_model -> evaluate_model, analyze_model.
#   snakemake --cores all                                      # params.yaml: mini-CLEVR demo
#   snakemake --cores all --configfile config/paper.yaml     # the paper, real CLEVR, GPU
#   snakemake experiments --cores all --configfile config/sweep-cpu.yaml   # Tables 2 and 3
# Every rule runs `python -m stages.<rule>`, the same command as the DVC stage of that name.


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/experiments.smk"


rule all:
    default_target: True
    input:
        rules.evaluate_model.output,
        rules.analyze_model.output,
