"""`python -m studiox_client ...` is the `studiox` command."""

import sys

from studiox_client.cli import main

sys.exit(main())
