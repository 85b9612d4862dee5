import sys

from randommask.cli import main

sys.exit(main())
