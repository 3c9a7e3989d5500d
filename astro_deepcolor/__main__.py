# Licensed under a 3-clause BSD style license - see LICENSE.rst
import sys

from astro_deepcolor.cli import main

sys.exit(main())
