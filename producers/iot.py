"""Entry point: see arus.sources.iot (moved there; this entry point is being thinned)."""

import sys

from arus.sources.iot import main

if __name__ == "__main__":
    sys.exit(main())
