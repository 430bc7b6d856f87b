"""Stop a build whose venv has the wrong torch: `python check_torch_flavour.py cpu|cuda`.

A plain `pip install torch` gives the CUDA build on Linux and the CPU build on Windows; a build that silently
picked the other one would ship a bundle several GB off its promise.
"""

import sys

import torch

flavour, cuda = sys.argv[1], torch.version.cuda
print(f"torch {torch.__version__}, CUDA {cuda or 'none'}")
if flavour not in ("cpu", "cuda"):
    sys.exit(f"flavour must be cpu or cuda, not {flavour!r}")
if (flavour == "cpu") != (cuda is None):
    sys.exit(f"the build venv has the wrong torch for flavour {flavour}: {torch.__version__}")
