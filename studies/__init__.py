"""The scripts behind the project's findings, one package per question (its README.md says
what it found and how to reproduce it). Run them from the repository root as modules, e.g.
`python -m studies.demo_recipe.schedule`; each trains through `filmclevr.runs`."""
