"""``python -m matnet``: the ``matnet`` command (see :mod:`matnet.cli`)."""
import sys

from .cli import main

sys.exit(main())
