import sys

from paratta.tools.cli import main

sys.exit(main())
