import sys

from ppddpm.cli.main import main

sys.exit(main())
