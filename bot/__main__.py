"""`python -m bot`: the command line (see bot.cli); with no command it will start the Discord bot."""

from bot.cli import main

raise SystemExit(main())
