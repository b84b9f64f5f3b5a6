"""Suite-wide checks: integration tests need root and the built tree.

A test that needs a capability this machine lacks fails and names it; it
never skips silently (a skipped test verifies nothing).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
