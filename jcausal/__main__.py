import sys

from jcausal.cli import main

sys.exit(main())
