"""mini-CLEVR: a small CLEVR-like dataset, generated here in the exact CLEVR v1.0 release format.

The generator is the only producer of data in the project besides the CLEVR download; the
pipeline reaches it through one entry point, `generate_mini_clevr`, from the `get_data` stage.

    scenes.py     scene sampling, camera projection, directions and relationships (SPEC §1)
    render.py     ray-cast renderer: perspective ground plane, occlusion, metal/rubber shading
    questions.py  question templates (9 groups, 26 functions) and balanced sampling
    generate.py   writes the release tree (images/, questions/, scenes/) atomically

Answers come from `filmclevr.executor`, the program executor that checks genuine CLEVR too.
"""

from filmclevr.mini.generate import generate_mini_clevr

__all__ = ["generate_mini_clevr"]
