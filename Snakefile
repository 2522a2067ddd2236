# FiLM on CLEVR: get_data -> resize_images -> tokenize_questions -> write_shards
#                -> train_model -> evaluate_model, submit_test (with a test split),
#                analyze_model (CoGenT: finetune_cogent, report_cogent; CLEVR-Humans:
#                get_humans, prepare_humans, finetune_humans, report_humans).
#   snakemake --cores all                                      # params.yaml: mini-CLEVR demo
#   snakemake --cores all --configfile config/paper.yaml     # the paper, real CLEVR, GPU
#   snakemake experiments --cores all --configfile config/sweep-cpu.yaml   # Tables 2 and 3
#   snakemake --cores all --configfile config/cogent-mini.yaml               # CLEVR-CoGenT
#   snakemake --cores all --configfile config/clevr-humans-mini.yaml         # CLEVR-Humans
# Every rule runs `python -m stages.<rule>`, the DVC stage of that name: each stage's command,
# inputs, outputs and parameters are declared once, in filmclevr/workflow_stages.py.


configfile: "params.yaml"


# snakemake --report report.html: the results, learning curves and analysis figures, each
# with its caption (workflow/report/*.rst); the rules mark what it shows.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/experiments.smk"
include: "workflow/rules/cogent.smk"
include: "workflow/rules/humans.smk"


rule all:
    default_target: True
    input:
        rules.evaluate_model.output,
        rules.analyze_model.output,
        rules.submission.input,  # profiles with a test split only
        rules.cogent.input,  # CoGenT profiles only (cogent.transfer)
        rules.humans.input,  # CLEVR-Humans profiles only (humans.sources)
