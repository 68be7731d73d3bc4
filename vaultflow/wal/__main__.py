"""`python -m vaultflow.wal push %p` and `python -m vaultflow.wal fetch %f %p`."""

import sys

from vaultflow.wal.command import main

sys.exit(main())
