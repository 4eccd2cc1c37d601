"""`python -m entrodrop.cli` (and `torchrun -m entrodrop.cli analyze ...`)."""

import sys

from entrodrop.cli import main

if __name__ == "__main__":
    sys.exit(main())
