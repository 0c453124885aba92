"""Sub-commands of the ``s3prl-distill`` command line (see :mod:`s3prl_distill.cli`)."""
