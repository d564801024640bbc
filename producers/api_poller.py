"""Entry point: see arus.sources.api_poller (moved there; this entry point is being thinned)."""

import sys

from arus.sources.api_poller import main

if __name__ == "__main__":
    sys.exit(main())
