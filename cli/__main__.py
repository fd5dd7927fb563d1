"""``python -m satmon.cli``: the same as the ``satmon`` console script."""

import sys

from satmon.cli import main

sys.exit(main())
