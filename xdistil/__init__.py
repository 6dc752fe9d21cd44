"""xdistil: distil multilingual NER teachers into small, fast students.

Importing the package is cheap and does not import torch; the modules that need
torch import it themselves.
"""

__version__ = "0.1.0"

DEFAULT_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
