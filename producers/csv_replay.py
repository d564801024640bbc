"""Entry point: see arus.sources.csv_replay (moved there; this entry point is being thinned)."""

import sys

from arus.sources.csv_replay import main

if __name__ == "__main__":
    sys.exit(main())
