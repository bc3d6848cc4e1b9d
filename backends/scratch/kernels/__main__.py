"""`python -m backends.scratch.kernels`: build the CPU kernels now (`make install` runs this)."""

import sys

from backends.scratch.kernels import describe

print(f"q8/q4 kernels: {describe()}", file=sys.stderr)
