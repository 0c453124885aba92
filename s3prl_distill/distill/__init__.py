"""Distillation: loss functions, teacher initialisation of students and the DistillationTask.

* :mod:`s3prl_distill.distill.config` - ``LossConfig``, ``InitConfig``, ``DistillConfig`` (the
  whole model YAML: student / teacher / loss / init sections).
* :mod:`s3prl_distill.distill.losses` - DistilHuBERT and FitHuBERT layer-wise losses.
* :mod:`s3prl_distill.distill.init` - copy the teacher's CNN and first layers into a student.
* :mod:`s3prl_distill.distill.task` - ``DistillationTask(student, teacher, loss)``.
"""
