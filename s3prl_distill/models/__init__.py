"""Student models: typed configs, building blocks and :func:`build_student`.

* :mod:`.config` - ``StudentConfig`` (+ ``CNNConfig``, ``EncoderConfig``, ``HeadConfig``), ``InitConfig``
* :mod:`.cnn` - conv front end and feature projection; :mod:`.transformer` - positional conv,
  attention, layers; :mod:`.time_reduction`; :mod:`.heads`
* :mod:`.student` - ``Student``, ``StudentOutput``, ``build_student``
* :mod:`.init` - initialise a student from a teacher's ``student_init_state``
"""

from s3prl_distill.models.config import InitConfig, StudentConfig
from s3prl_distill.models.student import Student, StudentOutput, build_student

__all__ = ["StudentConfig", "InitConfig", "Student", "StudentOutput", "build_student"]
