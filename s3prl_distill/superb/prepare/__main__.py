"""``python -m s3prl_distill.superb.prepare TASK ...``: ``s3prl-distill prepare`` (what the recipes call)."""

import sys

from s3prl_distill.commands.prepare import main

sys.exit(main())
