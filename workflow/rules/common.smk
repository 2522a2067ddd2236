# Validation of the config and the facts every rule file shares.
from filmclevr.params import validate_params

validate_params(config, "Snakemake config (params.yaml and any --configfile)")

# The parameters file the stage commands read: the last --configfile given, else params.yaml.
# Profiles are complete parameter files, so this file and `config` hold the same values.
PARAMS = (workflow.overwrite_configfiles or ["params.yaml"])[-1]

# Library modules each stage runs, declared as inputs so that a code change reruns the stage
# (dvc.yaml lists the same files as deps; tests/test_workflow.py checks that they agree).
LIB = "filmclevr/"
COMMON = ["stages/_common.py", LIB + "params.py", LIB + "io.py", LIB + "clevr.py"]


def code(stage, *modules):
    return [f"stages/{stage}.py"] + COMMON + [LIB + m for m in modules]
