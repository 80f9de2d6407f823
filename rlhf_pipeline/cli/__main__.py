"""``python -m rlhf_pipeline.cli``."""

from rlhf_pipeline.cli import main

raise SystemExit(main())
