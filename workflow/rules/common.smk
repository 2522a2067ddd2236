# The parameters every rule reads, and the facts the rule files share.
from filmclevr.params import check_input_files, load_params

if workflow.config_settings.config:
    raise ValueError(
        "--config overrides are not used: every stage reads a parameters file; "
        "edit params.yaml or pass --configfile <complete profile>"
    )

# The parameters file the stage commands read: the last --configfile given, else params.yaml.
PARAMS = (workflow.overwrite_configfiles or ["params.yaml"])[-1]

# Snakemake merges a --configfile into params.yaml key by key, while the stages read PARAMS
# alone: make the config (whose values the rules' `params:` track) exactly that file, validated.
config.clear()
config.update(load_params(PARAMS))
# A missing input a profile names stops every run here: with the outputs in place, Snakemake
# would otherwise skip the job that needs it and keep the old result.
check_input_files(config, PARAMS)

# Library modules each stage runs, declared as inputs so that a code change reruns the stage
# (dvc.yaml lists the same files as deps; tests/test_workflow.py checks that they agree).
LIB = "filmclevr/"
COMMON = [
    "stages/_common.py",
    LIB + "params.py",
    LIB + "configs.py",
    LIB + "fileio.py",
    LIB + "clevr.py",
]


# The threads of a job that uses every core the run is given (--cores). A function, read per
# job: `threads: workflow.cores` is read when the Snakefile is parsed, so `snakemake --unlock`,
# the step Snakemake names after a hard kill, failed without --cores.
def all_cores(wildcards):
    return workflow.cores


def code(stage, *modules):
    return [f"stages/{stage}.py"] + COMMON + [LIB + m for m in modules]


# The checkpoint a training run starts from (train_model.init_checkpoint), an input of the rule
# so that a new file reruns it; none for a run from scratch. DVC tracks the path only (params).
def init_checkpoint(train):
    return train.get("init_checkpoint") or []
