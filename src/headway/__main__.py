"""``python -m headway``: the same as the ``headway`` command."""

from headway.cli import main

raise SystemExit(main())
