"""A local plugin that calls sys.exit while it imports: reported like one that raises."""

import sys

sys.exit(3)
