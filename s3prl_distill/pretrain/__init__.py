"""Pretraining (distillation) through S3PRL: data, samplers, the pretrain expert, our trainer.

* :mod:`.config` - ``DataConfig`` (``pretrain_expert.datarc``) and ``PretrainConfig`` (runner YAML).
* :mod:`.data` - audio sources (LibriSpeech subsets, folder trees, file lists) and the length index.
* :mod:`.dataset` - ``DistillDataset`` (read, check, resample, random crop) and its collate.
* :mod:`.samplers` - length-bucketing batch sampler, resumable and split across processes.
* :mod:`.expert` - ``UpstreamPretrainExpert`` (S3PRL's pretrain interface) built on
  :class:`s3prl_distill.distill.task.DistillationTask`; ``distiller/pretrain_expert.py`` exposes it
  to S3PRL as ``-u distiller``.
* :mod:`.trainer` - our runner: resume, atomic checkpoints, DDP, autocast, accumulation.

This folder is put on S3PRL's ``pretrain`` package path (:mod:`s3prl_distill.registry`), so no
module here may share a name with S3PRL's own ``pretrain`` modules (``runner``, ``bucket_dataset``,
``apc``, ``mockingjay``, ...).
"""
