"""``run_pretrain -u distiller``: S3PRL imports ``pretrain.distiller.pretrain_expert`` and finds
:class:`s3prl_distill.pretrain.expert.UpstreamPretrainExpert` here (one implementation)."""

from s3prl_distill.pretrain.expert import UpstreamPretrainExpert

__all__ = ["UpstreamPretrainExpert"]
