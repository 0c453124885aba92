"""Typed runner configs for pretraining (the ``-c`` YAML), S3PRL's layout kept.

```yaml
runner:
  total_steps: 200000           # optimizer updates (n_epochs > 0 overrides it)
  n_epochs: -1
  gradient_clipping: 10.0
  gradient_accumulate_steps: 1
  log_step: 50
  save_step: 5000
  max_keep: 5                   # keep the last N checkpoints
  precision: fp32               # fp32 | bf16 | fp16 (autocast where the device supports it)
optimizer:                      # S3PRL's TorchOptim naming: any torch.optim class
  name: TorchOptim
  torch_optim_name: Adam
  lr: 2.0e-4
scheduler:
  name: linear_schedule_with_warmup
  warmup_proportion: 0.07       # or num_warmup_steps: N
pretrain_expert:
  datarc: {...}                 # DataConfig
```
Everything is parsed strictly with :func:`s3prl_distill.config.from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Literal, Mapping, Optional, Tuple, Union, get_args, get_type_hints

from s3prl_distill.config import ConfigError, from_dict

__all__ = [
    "DataConfig",
    "RunnerSection",
    "OptimizerConfig",
    "SchedulerConfig",
    "ExpertConfig",
    "PretrainConfig",
]


@dataclass
class DataConfig:
    """Where the audio is and how batches are made (``pretrain_expert.datarc``).

    Exactly one source: ``libri_root`` (+ ``sets``: LibriSpeech subsets such as
    ``train-clean-100``; with ``file_path`` the files and lengths come from S3PRL's length tables
    ``<file_path>/<set>.csv``), ``audio_dir`` (any folder tree of audio files), or ``file_list`` (a
    text file, one audio path per line, relative paths from the list's folder).

    S3PRL's distiller ``datarc`` (``pretrain/distiller/config_runner.yaml``: ``num_workers``,
    ``train_batch_size``, ``max_timestep``, ``libri_root``, ``file_path``, ``sets``) is accepted
    as is; ``bucketing: s3prl`` reproduces its batches.

    Attributes:
        train_batch_size: utterances per micro-batch over ALL processes (split across DDP ranks).
            S3PRL's bucket size.
        file_path: folder of S3PRL's length tables (``preprocess/generate_len_for_bucket.py``):
            one ``<set>.csv`` per entry of ``sets``, columns ``file_path`` (relative to
            ``libri_root``) and ``length`` (samples at the file's rate). Needs ``libri_root``.
        max_timestep: S3PRL's length filter on those lengths (samples at the file's rate; for the
            other sources, the header's frame count): > 0 keeps ``length < max_timestep``, < 0
            keeps ``length > -max_timestep``, 0 keeps all. Left-out files are counted in the log.
        length_index: file of per-utterance lengths, written once and reused (default: a file
            named after the source under ``$XDG_CACHE_HOME/s3prl_distill``).
        crop_seconds: random crop of longer utterances (0: no crop). A crop in samples given to
            the dataset (S3PRL's ``task.sequence_length``) overrides it.
        min_seconds: utterances shorter than this are skipped (besides the model's receptive field).
        max_seconds: utterances longer than this are left out (0: no limit), counted in the log.
        max_input_seconds: the longest input fed to the models (after the crop); a longer file
            is a *bad file* (named; ``bad_files`` says skip or stop) instead of an out-of-memory
            error minutes into the run (self-attention memory grows with the square of the
            length: 10 min of audio asked for a 64.8 GB attention matrix). ``null`` (default):
            60 s when nothing is cropped, no limit when ``crop_seconds`` bounds every input;
            ``0``: no limit. A teacher's own limit (Whisper: 30 s) always applies too.
        bucketing: ``true``: batch utterances of similar length (stably sorted, chunked, batch
            order shuffled); ``false``: random batches; ``null`` (default): ``s3prl`` when the
            data come in S3PRL's schema (``file_path`` length tables, so that S3PRL's own
            ``config_runner.yaml`` gets S3PRL's batches), else ``true``; ``s3prl``: S3PRL's batches exactly
            (its length tables' order sorted by length, fixed chunks of ``train_batch_size``,
            halved when the longest is over 99999 samples and nothing is cropped, a last partial
            batch kept when it holds more than one utterance, batch order shuffled each epoch);
            ``fithubert``: the official FitHuBERT code's batches (the same sorted chunks, never
            halved, one bucket of ``train_batch_size / W`` per process, buckets shuffled and
            dealt out as Lightning's ``DistributedSampler`` deals them).
        bad_files: ``skip`` (count and log them) or ``error`` (stop, naming the file).
        on_resample: other sample rates are resampled with a warning (``warn``) or are bad files
            (``error``).
        on_multichannel: multi-channel files are averaged (``mix``) or are bad files (``error``).
        teacher_cache: folder of an on-disk cache of the teacher's target states
            (:mod:`s3prl_distill.pretrain.teacher_cache`); built at the start of the run unless it
            already holds this teacher's states for these layers and utterances, then read
            instead of running the teacher (null: off, the teacher runs every step). Needs the
            utterances fed whole: ``crop_seconds`` 0 or not shorter than the longest utterance.
            The dev set's targets go to its subfolder ``dev``. A folder holding files this
            package did not write is refused, never overwritten.
        teacher_cache_dtype: storage type of the cached states (float16: half the disk of
            float32, about 1e-3 relative difference from the live targets; int8: a quarter,
            per-frame scale; float32: exact).
        dev_sets: LibriSpeech subsets of the dev set (under ``libri_root``; from
            ``<file_path>/<set>.csv`` when ``file_path`` is given), e.g. ``[dev-clean]``.
        dev_audio_dir, dev_file_list: a dev set as a folder tree or a file list (instead of
            ``dev_sets``). No dev key: no validation.
        dev_batch_size: utterances per dev batch over all processes (default train_batch_size).
    """

    train_batch_size: int = 24
    num_workers: int = 0
    libri_root: Optional[str] = None
    sets: List[str] = field(default_factory=lambda: ["train-clean-100", "train-clean-360",
                                                      "train-other-500"])
    file_path: Optional[str] = None
    max_timestep: int = 0
    audio_dir: Optional[str] = None
    file_list: Optional[str] = None
    extensions: List[str] = field(default_factory=lambda: [".flac", ".wav"])
    length_index: Optional[str] = None
    sample_rate: int = 16000
    crop_seconds: float = 0.0
    min_seconds: float = 0.0
    max_seconds: float = 0.0
    max_input_seconds: Optional[float] = None
    bucketing: Optional[Union[bool, Literal["s3prl", "fithubert"]]] = None
    shuffle: bool = True
    drop_last: bool = False
    bad_files: Literal["skip", "error"] = "skip"
    on_resample: Literal["warn", "error"] = "warn"
    on_multichannel: Literal["mix", "error"] = "error"
    teacher_cache: Optional[str] = None
    teacher_cache_dtype: Literal["float16", "bfloat16", "float32", "int8"] = "float16"
    dev_sets: List[str] = field(default_factory=list)
    dev_audio_dir: Optional[str] = None
    dev_file_list: Optional[str] = None
    dev_batch_size: Optional[int] = None

    #: ``max_input_seconds: null`` when nothing is cropped (see the attribute)
    AUTO_MAX_INPUT_SECONDS = 60.0

    def validate(self) -> None:
        given = [k for k in ("libri_root", "audio_dir", "file_list") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(
                "give exactly one data source: libri_root (+ sets, + file_path for S3PRL's length "
                f"tables), audio_dir or file_list; got {given or 'none'}"
            )
        if self.libri_root and not self.sets:
            raise ConfigError("sets: expected at least one LibriSpeech subset with libri_root")
        if self.file_path and not self.libri_root:
            raise ConfigError("file_path: S3PRL's length tables list paths relative to libri_root; "
                              "give libri_root too (the LibriSpeech folder)")
        if self.train_batch_size < 1:
            raise ConfigError(f"train_batch_size: expected >= 1, got {self.train_batch_size}")
        if self.dev_batch_size is not None and self.dev_batch_size < 1:
            raise ConfigError(f"dev_batch_size: expected >= 1 or null, got {self.dev_batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers: expected >= 0, got {self.num_workers}")
        for key in ("crop_seconds", "min_seconds", "max_seconds"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected >= 0, got {getattr(self, key)}")
        if self.max_input_seconds is not None and self.max_input_seconds < 0:
            raise ConfigError(f"max_input_seconds: expected >= 0 (0: no limit) or null (auto), "
                              f"got {self.max_input_seconds}")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate: expected > 0, got {self.sample_rate}")
        if self.teacher_cache is not None and not self.teacher_cache.strip():
            raise ConfigError("teacher_cache: expected a folder path or null (off), got an empty string")
        dev = [k for k in ("dev_sets", "dev_audio_dir", "dev_file_list") if getattr(self, k)]
        if len(dev) > 1:
            raise ConfigError("give at most one dev set: dev_sets, dev_audio_dir or dev_file_list; "
                              f"got {dev}")
        if self.dev_sets and not self.libri_root:
            raise ConfigError("dev_sets: LibriSpeech subsets need libri_root; for other sources "
                              "give dev_audio_dir or dev_file_list")

    def check_teacher_rate(self, teacher_rate: int) -> None:
        """Raise unless ``sample_rate`` is the teacher's input rate (call it with
        ``teacher.sample_rate``).

        Raises:
            ConfigError: naming ``datarc.sample_rate`` and the teacher's rate.
        """
        if int(teacher_rate) != int(self.sample_rate):
            raise ConfigError(
                f"datarc.sample_rate: {self.sample_rate} Hz, but the teacher takes {int(teacher_rate)} Hz "
                f"audio; set sample_rate: {int(teacher_rate)} (files at other rates are resampled "
                "to it), otherwise the models would train on wrongly-pitched audio"
            )

    def check_cache_crop(self, longest_samples: int, crop_samples: Optional[int] = None) -> None:
        """With ``teacher_cache`` on, raise unless every utterance is fed whole.

        Args:
            longest_samples: samples of the longest utterance of the source (after resampling).
            crop_samples: the crop actually used, when given in samples (S3PRL's
                ``task.sequence_length``); default ``crop_seconds``.

        Raises:
            ConfigError: naming ``crop_seconds`` when a random crop could cut an utterance.
        """
        crop = self.crop_samples if crop_samples is None else int(crop_samples)
        if self.teacher_cache and crop and crop < longest_samples:
            what = (f"crop_seconds: {self.crop_seconds} s" if crop_samples is None else
                    f"a crop of {crop} samples (task.sequence_length)")
            raise ConfigError(
                f"{what} random crops cannot be used with teacher_cache "
                f"(the longest utterance has {longest_samples / self.sample_rate:.2f} s): cached "
                "targets are only valid for the exact audio they were computed from, and a random "
                "crop feeds a different part each epoch; set crop_seconds: 0 (or split long files, "
                "or use max_seconds to leave them out), or teacher_cache: null"
            )

    @property
    def crop_samples(self) -> int:
        """``crop_seconds`` in samples (0: no crop)."""
        return int(round(self.crop_seconds * self.sample_rate))

    @property
    def batching(self) -> Union[bool, str]:
        """``bucketing`` in effect (``null``: ``s3prl`` with S3PRL's length tables, else true)."""
        if self.bucketing is None:
            return "s3prl" if self.file_path else True
        return self.bucketing

    @property
    def source_kind(self) -> str:
        if self.libri_root:
            return "s3prl_csv" if self.file_path else "librispeech"
        if self.audio_dir:
            return "folder"
        return "file_list"

    @property
    def has_dev(self) -> bool:
        return bool(self.dev_sets or self.dev_audio_dir or self.dev_file_list)

    def dev_config(self) -> Optional["DataConfig"]:
        """The data config of the dev set (whole utterances, same screening), or None.

        The source is replaced by the dev set; the length index is a sibling file
        (``<length_index stem>-dev<ext>``, or the default one of the dev source) and the teacher
        cache the subfolder ``<teacher_cache>/dev``.
        """
        if not self.has_dev:
            return None
        import dataclasses
        import os

        index = None
        if self.length_index:
            stem, ext = os.path.splitext(self.length_index)
            index = f"{stem}-dev{ext}"
        return dataclasses.replace(
            self,
            libri_root=self.libri_root if self.dev_sets else None,
            sets=list(self.dev_sets) if self.dev_sets else list(self.sets),
            file_path=self.file_path if self.dev_sets else None,
            audio_dir=self.dev_audio_dir,
            file_list=self.dev_file_list,
            length_index=index,
            crop_seconds=0.0,
            train_batch_size=self.dev_batch_size or self.train_batch_size,
            shuffle=False,
            drop_last=False,
            teacher_cache=os.path.join(self.teacher_cache, "dev") if self.teacher_cache else None,
            dev_sets=[], dev_audio_dir=None, dev_file_list=None, dev_batch_size=None,
        )


@dataclass
class RunnerSection:
    """Loop settings: S3PRL's ``runner:`` keys, plus ``precision``, validation and DDP options.

    Attributes:
        total_steps: optimizer updates (``n_epochs > 0`` overrides it: epochs x batches / accumulation).
        gradient_clipping: max global gradient norm; null = no clipping (the official FitHuBERT
            trainer clips nothing; S3PRL's distiller runner clips at 5.0).
        fp16: S3PRL's key; the same as ``precision: fp16``.
        eval_step: evaluate the distillation loss on the dev set every this many updates (0: never).
        eval_each_epoch: also evaluate at the end of every epoch (the official FitHuBERT trainer).
        early_stopping_patience: stop after this many evaluations without a new best dev loss
            (0: never stop early); the best checkpoint is kept as ``best.ckpt`` whenever a dev
            set is evaluated.
        early_stopping_min_delta: an evaluation must improve the best dev loss by more than this.
        keep_best: also keep the students of the ``K`` lowest dev evaluations as
            ``best-<update>.ckpt`` (pruned as they leave the ranking; 1: ``best.ckpt`` only). The
            official FitHuBERT trainer keeps 3 (``ModelCheckpoint(save_top_k=3)``) and the last
            (our newest ``states-<N>.ckpt``).
        early_stopping_metric: the dev figure that decides the best checkpoint and early
            stopping: ``loss`` (the training objective) or a loss term (``feat``: FitHuBERT's
            last-layer MSE, the official ``v_loss``; ``l1/layer4``, ...).
        plan_at_start: when a run starts (not when it resumes), log ``s3prl-distill plan``'s
            estimate first: time per update and in total, teacher-cache size, peak memory, the
            longest utterance a batch can hold (a few updates timed on copies; the run itself is
            unchanged, bit for bit).
    """

    total_steps: int = 200000
    n_epochs: int = -1
    gradient_clipping: Optional[float] = 10.0
    gradient_accumulate_steps: int = 1
    log_step: int = 50
    save_step: int = 5000
    max_keep: int = 5
    fp16: bool = False  # S3PRL's key; same as precision: fp16
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    find_unused_parameters: bool = False
    eval_step: int = 0
    eval_each_epoch: bool = False
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    early_stopping_metric: str = "loss"
    keep_best: int = 1
    plan_at_start: bool = True

    def validate(self) -> None:
        for key in ("gradient_accumulate_steps", "log_step", "save_step", "max_keep", "keep_best"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: expected >= 1, got {getattr(self, key)}")
        if self.n_epochs <= 0 and self.total_steps < 1:
            raise ConfigError("total_steps: expected >= 1 (or n_epochs > 0)")
        if self.gradient_clipping is not None and self.gradient_clipping <= 0:
            raise ConfigError(f"gradient_clipping: expected > 0 or null (no clipping), got "
                              f"{self.gradient_clipping}")
        for key in ("eval_step", "early_stopping_patience"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: expected >= 0, got {getattr(self, key)}")
        if self.early_stopping_min_delta < 0:
            raise ConfigError(f"early_stopping_min_delta: expected >= 0, got "
                              f"{self.early_stopping_min_delta}")
        if self.early_stopping_patience and not (self.eval_step or self.eval_each_epoch):
            raise ConfigError("early_stopping_patience needs evaluations: set eval_step or "
                              "eval_each_epoch: true (and a dev set in pretrain_expert.datarc)")

    @property
    def amp_precision(self) -> str:
        return "fp16" if self.fp16 and self.precision == "fp32" else self.precision

    @property
    def evaluates(self) -> bool:
        """Whether the run evaluates a dev set at all."""
        return bool(self.eval_step or self.eval_each_epoch)


@dataclass
class OptimizerConfig:
    """The ``optimizer:`` section, in S3PRL's schema (:mod:`s3prl_distill.pretrain.optim`).

    ``name``: ``AdamW_with_schedule`` (S3PRL's pretraining optimizer, with its own linear
    warm-up/decay over ``warmup_proportion`` of the updates), ``TorchOptim`` +
    ``torch_optim_name`` (any of Adam, AdamW, SGD, scheduled by the ``scheduler:`` section),
    or ``Adam`` / ``AdamW``.

    ``weight_decay_groups`` (``AdamW_with_schedule`` only): ``s3prl`` = S3PRL's parameter groups
    (0.01 on every weight, layer norms included, 0 on biases; ``weight_decay`` has no effect,
    as in S3PRL), ``uniform`` = ``weight_decay`` on every parameter.

    ``head_lr``: peak learning rate of the prediction heads (null: ``lr``, the papers' setting).
    A student copied from its teacher starts with random heads; until they fit, their gradients
    push the copied layers around at the full rate (Adam normalises step sizes), which undoes the
    copy in a short run. A faster head rate (e.g. 10 x ``lr``) lets the heads catch up first.
    The schedule scales both rates alike.
    """

    name: Literal["TorchOptim", "Adam", "AdamW", "AdamW_with_schedule"] = "TorchOptim"
    torch_optim_name: Optional[Literal["Adam", "AdamW", "SGD"]] = "Adam"
    lr: float = 2.0e-4
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    weight_decay: float = 0.0
    warmup_proportion: float = 0.07
    weight_decay_groups: Literal["s3prl", "uniform"] = "s3prl"
    head_lr: Optional[float] = None

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ConfigError(f"head_lr: expected > 0 or null, got {self.head_lr}")
        if not 0 <= self.warmup_proportion < 1:
            raise ConfigError(f"warmup_proportion: expected in [0, 1), got {self.warmup_proportion}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay: expected >= 0, got {self.weight_decay}")

    @property
    def torch_class(self) -> str:
        return self.torch_optim_name if self.name == "TorchOptim" else self.name


@dataclass
class SchedulerConfig:
    """Linear warm-up to ``lr`` then linear decay to 0 at the last step (DistilHuBERT, FitHuBERT)."""

    name: Literal["linear_schedule_with_warmup", "constant"] = "linear_schedule_with_warmup"
    num_warmup_steps: Optional[int] = None
    warmup_proportion: Optional[float] = None

    def validate(self) -> None:
        if self.num_warmup_steps is not None and self.warmup_proportion is not None:
            raise ConfigError("give num_warmup_steps or warmup_proportion, not both")
        if self.warmup_proportion is not None and not 0 <= self.warmup_proportion <= 1:
            raise ConfigError(f"warmup_proportion: expected in [0, 1], got {self.warmup_proportion}")
        if self.num_warmup_steps is not None and self.num_warmup_steps < 0:
            raise ConfigError(f"num_warmup_steps: expected >= 0, got {self.num_warmup_steps}")

    def warmup_steps(self, total_steps: int) -> int:
        if self.num_warmup_steps is not None:
            return self.num_warmup_steps
        if self.warmup_proportion is not None:
            return int(round(self.warmup_proportion * total_steps))
        return 0


@dataclass
class ExpertConfig:
    datarc: DataConfig


@dataclass
class PretrainConfig:
    """The whole runner YAML (``-c``)."""

    runner: RunnerSection
    optimizer: OptimizerConfig
    pretrain_expert: ExpertConfig
    scheduler: Optional[SchedulerConfig] = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any], where: str = "runner config") -> "PretrainConfig":
        """Parse the runner YAML data; errors read ``<file>: <section>.<key>: ...``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        sections = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; allowed: {sorted(sections)}")
        hints = get_type_hints(cls)
        values = {}
        for name in sections:
            if name not in data:
                if name == "scheduler":
                    continue
                raise ConfigError(f"{where}: missing top-level key '{name}'")
            values[name] = from_dict(_strip_optional(hints[name]), data[name], where=f"{where}: {name}") \
                if data[name] is not None else None
        return cls(**values)


def _strip_optional(tp):
    args = [a for a in get_args(tp) if a is not type(None)]
    return args[0] if args else tp
