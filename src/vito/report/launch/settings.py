"""The resources of a study's jobs: the suite's ``launcher:`` block and the same options on the command line.

Why one dataclass for both: a suite names what a study needs once (partition, GPUs, time), a command line
overrides it for one submission (``--partition debug``); both go through ``vito.schema``, so an unknown key is
named and a wrong type refused before anything is submitted. Every field left unset (None) is submitit's or
SLURM's default, except the three that matter for every job: ``nodes`` 1, ``timeout_min`` 1440 (a day: submitit's
own default is 5 minutes) and ``signal_delay_s`` 120 (the warning before the time limit: a step plus a checkpoint
must fit into it, docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from vito.errors import VitoError
from vito.schema import from_mapping

DEFAULT_NODES = 1
DEFAULT_TIMEOUT_MIN = 1440
DEFAULT_SIGNAL_DELAY_S = 120


@dataclass
class LauncherSettings:
    """The ``launcher:`` block of a suite (every key optional) and ``vito report``'s resource options."""

    cluster: Literal["slurm", "local"] | None = field(default=None, metadata={
        "help": "submitit's executor: slurm, or local (jobs as processes on this machine; for tests and a "
                "workstation) (default: slurm where srun is found, else local)"})
    partition: str | None = field(default=None, metadata={"help": "SLURM partition"})
    nodes: int | None = field(default=None, metadata={
        "help": f"nodes per pretraining job (default {DEFAULT_NODES}; evaluation cells use one)"})
    gpus_per_node: int | None = field(default=None, metadata={
        "help": "GPUs per node; a pretraining job runs one process per GPU (torchrun's set-up)"})
    cpus_per_task: int | None = field(default=None, metadata={"help": "CPUs per process (DataLoader workers)"})
    mem_gb: int | None = field(default=None, metadata={"help": "memory per node in GB"})
    timeout_min: int | None = field(default=None, metadata={
        "help": f"time limit of a job in minutes (default {DEFAULT_TIMEOUT_MIN}); a job stopped there is requeued"})
    signal_delay_s: int | None = field(default=None, metadata={
        "help": f"seconds between submitit's SIGUSR2 and the time limit (default {DEFAULT_SIGNAL_DELAY_S}): "
                "a step plus a checkpoint must fit"})
    account: str | None = field(default=None, metadata={"help": "SLURM account"})
    qos: str | None = field(default=None, metadata={"help": "SLURM quality of service"})
    constraint: str | None = field(default=None, metadata={"help": "SLURM node constraint (e.g. a GPU type)"})
    slurm_additional_parameters: list[str] | None = field(default=None, metadata={
        "help": "further sbatch options as KEY=VALUE (e.g. exclusive=true reservation=r1); a mapping in the suite",
        "cli": {"metavar": "KEY=VALUE"}})

    def over(self, base: LauncherSettings | None) -> LauncherSettings:
        """These settings laid over ``base`` (a command line over a suite): a value set here wins."""
        if base is None:
            return self
        return LauncherSettings(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                                   else getattr(base, f.name) for f in dataclasses.fields(self)})


def parse_launcher(value: Any, where: str) -> LauncherSettings | None:
    """The suite's ``launcher:`` block (None when absent); ``slurm_additional_parameters`` may be a mapping."""
    if value is None:
        return None
    if isinstance(value, dict):
        extra = next((key for key in value if str(key).replace("-", "_") == "slurm_additional_parameters"), None)
        if extra is not None and isinstance(value[extra], dict):
            value = {**value, extra: [f"{key}={item}" for key, item in value[extra].items()]}
    return from_mapping(LauncherSettings, value, where)


def additional_parameters(words: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` words as sbatch options (``true``/``false`` become booleans, as submitit writes flags)."""
    parameters: dict[str, Any] = {}
    for word in words or []:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise VitoError(f"slurm_additional_parameters: {word!r} is not KEY=VALUE")
        parameters[key.replace("-", "_")] = {"true": True, "false": False}.get(text.lower(), text)
    return parameters


def submitit_parameters(settings: LauncherSettings, distributed: bool) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for one job. ``distributed`` (a pretraining run): all
    the nodes and one process (task) per GPU; otherwise (an evaluation cell) one node and one process."""
    s = settings
    nodes = (s.nodes or DEFAULT_NODES) if distributed else 1
    gpus = s.gpus_per_node or 0
    parameters: dict[str, Any] = {
        "nodes": nodes, "tasks_per_node": max(gpus, 1) if distributed else 1,
        "timeout_min": s.timeout_min or DEFAULT_TIMEOUT_MIN, "gpus_per_node": gpus,
        "cpus_per_task": s.cpus_per_task, "mem_gb": s.mem_gb,
        "slurm_partition": s.partition, "slurm_account": s.account, "slurm_qos": s.qos,
        "slurm_constraint": s.constraint,
        "slurm_signal_delay_s": s.signal_delay_s or DEFAULT_SIGNAL_DELAY_S,  # local jobs: submitit's 30 s
    }
    extra = additional_parameters(s.slurm_additional_parameters)
    if extra:
        parameters["slurm_additional_parameters"] = extra
    return {key: value for key, value in parameters.items() if value is not None}
