# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Internal utilities (validators, optional dependencies, safe file I/O)."""
