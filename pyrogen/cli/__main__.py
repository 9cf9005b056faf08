"""python -m pyrogen.cli (as python -m pyrogen)."""

from pyrogen.cli.app import main

raise SystemExit(main())
