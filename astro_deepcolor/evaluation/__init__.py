# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Evaluation of detections against truth: one-to-one matching, completeness,
contamination, deblending success and false positives per contaminant
class. The benchmark harness (``astro_deepcolor.evaluation.harness``) is
imported on demand only.
"""

from .matching import *  # noqa: F403
from .metrics import *  # noqa: F403
