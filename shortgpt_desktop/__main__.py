"""``python -m shortgpt_desktop`` opens the window (same options as ``shortgpt-desktop``)."""

from .app import main

raise SystemExit(main())
