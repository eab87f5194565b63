"""``python -m vmanager.demo``."""

import sys

from vmanager.demo import main

sys.exit(main())
