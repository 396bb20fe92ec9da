"""`python -m fusegrad cache ...`: the same command line as the `fusegrad` script."""
import sys

from .runtime.cli import main

sys.exit(main())
