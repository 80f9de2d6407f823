"""``python -m rlhf_env.cli``."""

from rlhf_env.cli import main

raise SystemExit(main())
