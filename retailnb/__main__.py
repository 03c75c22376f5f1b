"""``python -m retailnb``: the ``retailnb`` command line (see :mod:`retailnb.cli`)."""

import sys

from retailnb.cli import main

sys.exit(main())
