# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Completeness/contamination benchmark (what ``tox -e benchmark`` runs).

Equivalent to ``astro-deepcolor benchmark``; all its options apply, e.g.::

    python benchmarks/run_benchmark.py --quick --out results/quick
    python benchmarks/run_benchmark.py --out results/benchmark
"""

import sys

from astro_deepcolor.cli import main

if __name__ == '__main__':
    sys.exit(main(['benchmark', *sys.argv[1:]]))
