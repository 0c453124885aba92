"""S3PRL upstream for s3prl-distill students: :mod:`.expert` (``UpstreamExpert``) and
:mod:`.hubconf` (``ENTRIES``, the functions registry.py puts on ``s3prl.hub``)."""
