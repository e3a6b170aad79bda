"""``python -m flowyml_lite``: the command line (see ``flowyml_lite.cli``)."""

import sys

from .cli import main

sys.exit(main())
