"""``python -m flowyml_lite.cli``: the same command line as ``python -m flowyml_lite``."""

import sys

from .entry import main

sys.exit(main())
