import sys

from tdfast.cli import main

sys.exit(main())
