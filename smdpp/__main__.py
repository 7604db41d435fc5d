import sys

from smdpp.cli import main

sys.exit(main())
