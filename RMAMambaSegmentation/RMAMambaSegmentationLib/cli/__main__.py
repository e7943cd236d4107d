"""``python -m RMAMambaSegmentationLib.cli``."""

import sys

from RMAMambaSegmentationLib.cli import main

sys.exit(main())
