"""`python -m rsp` = the `rsp` command."""

import sys

from rsp.cli import main

sys.exit(main())
