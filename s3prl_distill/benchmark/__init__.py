"""Benchmarks: inference speed/MACs/memory against the teacher and S3PRL, distillation throughput.

Modules: :mod:`.timing` (interleaved timing, peak RSS, machine load), :mod:`.candidates` (the
models under test), :mod:`.s3prl_distiller` (S3PRL's own DistilHuBERT as the reference),
:mod:`.inference` (the inference table), :mod:`.variants` (optimisation rows), :mod:`.training`
(distillation throughput, teacher forward), :mod:`.precision` (teacher precision drift),
:mod:`.report` (tables, targets, JSON), :mod:`.plan` (a configured run's cost). Entry points:
``s3prl-distill bench`` (:mod:`s3prl_distill.commands.bench`), ``s3prl-distill plan``
(:mod:`s3prl_distill.commands.plan`).
"""
