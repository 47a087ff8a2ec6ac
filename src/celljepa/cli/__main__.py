"""``python -m celljepa.cli ARGS`` runs ``celljepa ARGS``."""

import sys

from . import main

sys.exit(main())
