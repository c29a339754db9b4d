"""`python -m patchci`: the same as the `patchci` command."""

from patchci.cli import main

raise SystemExit(main())
