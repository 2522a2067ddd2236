# The parameters every rule reads, and what the rule files share. Each rule's command, inputs,
# outputs and parameter keys come from the stage table, filmclevr/workflow_stages.py (dvc.yaml
# is generated from it); its code dependencies are computed there from the imports of
# stages/<rule>.py, so that a code change reruns every stage that runs the code.
from pathlib import Path

from snakemake.exceptions import WorkflowError

from filmclevr import workflow_stages
from filmclevr.params import check_input_files, load_params

if workflow.config_settings.config:
    raise ValueError(
        "--config overrides are not used: every stage reads a parameters file; "
        "pass --configfile config/<profile>.yaml (resolved on its bases), or write one as "
        "params.yaml: filmclevr-params config/<profile>.yaml"
    )

# The parameters file the stage commands read: the last --configfile given, else params.yaml.
PARAMS = (workflow.overwrite_configfiles or ["params.yaml"])[-1]

# Snakemake merges a --configfile into params.yaml key by key, while the stages read PARAMS
# alone: make the config (whose values the rules' `params:` track) exactly that profile,
# resolved on its bases and validated.
config.clear()
config.update(load_params(PARAMS))
# A missing input a profile names stops every run here: with the outputs in place, Snakemake
# would otherwise skip the job that needs it and keep the old result.
check_input_files(config, PARAMS)

STAGES = workflow_stages.STAGES
# Where stages/ and filmclevr/ are, whose imports make each stage's code dependencies.
PROJECT = Path(workflow.basedir)


# The threads of a job that uses every core the run is given (--cores). A function, read per
# job: `threads: workflow.cores` is read when the Snakefile is parsed, so `snakemake --unlock`,
# the step Snakemake names after a hard kill, failed without --cores. `snakemake --report`
# sets its one core only after the Snakefile is read, so workflow.cores is unset there.
def all_cores(wildcards):
    try:
        return workflow.cores
    except WorkflowError:
        if workflow.resource_settings.cores is None:
            raise
        return workflow.resource_settings.cores


# A rule's part from the stage table: `input: **stage_input("<rule>")`, and so on.
def stage_input(name):
    return workflow_stages.snakemake_inputs(PROJECT, STAGES[name], config)


# `shown` marks outputs for `snakemake --report`: output name -> shown_in_report(...).
def stage_output(name, shown={}):
    outputs = workflow_stages.snakemake_outputs(STAGES[name])
    unknown = set(shown) - set(outputs)
    if unknown:
        raise ValueError(
            f"rule {name}: no output {sorted(unknown)} to show in the report"
        )
    marked = {}
    for key, (path, is_dir) in outputs.items():
        marked[key] = directory(path) if is_dir else path
        if key in shown:
            marked[key] = report(marked[key], **shown[key])
    return marked


# How the report shows an output: its caption (workflow/report/<caption>, reStructuredText
# with Jinja: `snakemake.config`, `snakemake.wildcards`), its category and subcategory (which
# may hold wildcards), labels (its row in the category's table) and, for a folder, the
# patterns of the files to show. Captions are read relative to the rule files' folder.
def shown_in_report(caption, category, subcategory=None, labels=None, patterns=()):
    return dict(
        caption=f"../report/{caption}",
        category=category,
        subcategory=subcategory,
        labels=labels,
        patterns=list(patterns),
    )


def stage_params(name):
    return workflow_stages.snakemake_params(STAGES[name], config)


def stage_shell(name):
    return workflow_stages.snakemake_shell(STAGES[name]) + " 2>&1 | tee {log}"


# Every output of every job of a matrix stage (its `cogent.transfer` splits, ...).
def stage_targets(name):
    return workflow_stages.snakemake_targets(STAGES[name], config)


# A matrix's wildcards ({name}, {seed}, {split}, {questions}) match exactly its listed values.
wildcard_constraints:
    **workflow_stages.wildcard_constraints(config),
