"""A punctuation and capitalization restorer built on seqlab, outside the seqlab package.

Importing the package registers its experiments: ``seqlab --import examples/punctuator ...``.
The walk-through is docs/tutorial.md.
"""

from . import experiments  # noqa: F401  (registers the experiments)
