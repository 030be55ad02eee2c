"""``python -m jcausal``: the command line. Python puts the working folder first on ``sys.path``
for ``-m``; it is moved last, so a file there named like a dependency never replaces it (a user's
model module there is still found)."""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from jcausal.cli import main  # noqa: E402 - after the path fix

sys.exit(main())
