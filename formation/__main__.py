"""`python -m formation` is the `formation` command."""

import sys

from formation.cli.app import main

sys.exit(main())
