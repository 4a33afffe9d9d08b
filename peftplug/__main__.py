"""``python -m peftplug``: the same command line as the ``peftplug`` script."""

import sys

from peftplug.cli import main

if __name__ == "__main__":
    sys.exit(main())
