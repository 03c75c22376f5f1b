"""``python -m retailnb``: the ``retailnb`` command line (see :mod:`retailnb.bundle.cli`)."""

import sys

from retailnb.bundle.cli import main

sys.exit(main())
