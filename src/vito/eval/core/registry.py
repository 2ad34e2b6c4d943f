"""The evaluation registry: each evaluation is one class, found because its package holds it.

Why a registry (as timm's ``register_model``): ``vito eval NAME`` is built from each registered class's
Settings dataclass, and ``vito report`` runs the same classes, so a number in a report is the number the
standalone command prints.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from vito.errors import VitoError
from vito.eval.core.encoders import Encoder
from vito.eval.core.result import Result, plain
from vito.schema import flag_name, from_mapping
from vito.schema.fields import default_of


class Evaluation:
    """Subclass, set the class attributes (``name``, ``Settings``, ``headline``...), implement ``run`` and decorate
    with ``@register``."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    needs_encoder: ClassVar[bool | Literal["optional"]] = True
    uses_classifier: ClassVar[bool] = False  # its Settings has a ``classifier`` field (own | head file)
    group: ClassVar[str] = "other"  # report grouping: "scene", "video", "ood", "human", "dense"
    # The key in ``Result.metrics`` of the one number a report shows for this evaluation by default (mIoU, AP,
    # J&F mean, top-1, ...): a report of many evaluations stays readable, and its column, plot axis and summary
    # say the figure the paper reports. Every registered evaluation sets it (the registry's contract test checks
    # that its Result holds that key); a report shows the other metrics on request.
    headline: ClassVar[str]
    help: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def run(self, encoder: Encoder | None, settings: Any, out_dir: Path) -> Result:
        raise NotImplementedError

    def check(self, settings: Any, has_encoder: bool) -> None:
        """Refuse settings that cannot run (before an encoder is loaded); the default checks the encoder rule."""
        if self.needs_encoder is True and not has_encoder:
            raise VitoError(f"vito eval {self.name} needs --encoder ENC")

    def unused_settings(self, settings: Any, has_encoder: bool) -> dict[str, str]:
        """The Settings fields this mode does not use, each with why (e.g. "--results only scores").

        Why declare them: a value accepted and not applied would be recorded as if it shaped the number. So the
        harness refuses any of them set to other than its default, and leaves them out of the Result; the
        contract test over the registry checks that every other field is read in each mode.
        """
        return {}


REGISTRY: dict[str, type[Evaluation]] = {}


def register(cls: type[Evaluation]) -> type[Evaluation]:
    """Class decorator: make ``cls`` available as ``vito eval cls.name`` and to ``vito report``."""
    if not dataclasses.is_dataclass(getattr(cls, "Settings", None)):
        raise TypeError(f"{cls.__name__}.Settings must be a dataclass")
    existing = REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"evaluation name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def discover() -> dict[str, type[Evaluation]]:
    """Import every benchmark package under ``vito.eval``; each package's ``__init__`` imports its command
    modules (those that ``@register`` an evaluation). Returns the registry.

    Why packages, not every module: an evaluation is found because its package holds it, not because a central
    list names it, while the heavy modules behind a command (models, fine-tune recipes, pictures) are imported
    only when it runs, so that building ``vito eval NAME --help`` stays fast.
    """
    package = importlib.import_module("vito.eval")
    for module in pkgutil.walk_packages(package.__path__, prefix="vito.eval."):
        if module.ispkg:
            importlib.import_module(module.name)
    return REGISTRY


def get(name: str) -> type[Evaluation]:
    """The registered evaluation called ``name`` (a ``VitoError`` listing the known names otherwise)."""
    if name not in REGISTRY:
        discover()
    if name not in REGISTRY:
        raise VitoError(f"unknown evaluation {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def settings_from_mapping(cls: type[Evaluation], mapping: Mapping[str, Any]) -> Any:
    """``cls.Settings`` from a suite file's mapping, by the schema's rules (:mod:`vito.schema.mapping`)."""
    return from_mapping(cls.Settings, mapping, where=cls.name)


def settings_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain JSON values."""
    return plain(dataclasses.asdict(settings))


def recorded_settings(cls: type[Evaluation], settings: Any, has_encoder: bool) -> dict[str, Any]:
    """The settings that shape this mode's numbers, as plain JSON values: ``Result.settings`` and what
    ``vito report`` compares a stored cell with (``Evaluation.unused_settings`` are left out)."""
    unused = cls().unused_settings(settings, has_encoder)
    return {name: value for name, value in settings_dict(settings).items() if name not in unused}


def refuse_unused(cls: type[Evaluation], settings: Any, has_encoder: bool) -> None:
    """A ``VitoError`` for a field this mode does not use that was set to anything but its default."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    for name, why in cls().unused_settings(settings, has_encoder).items():
        if getattr(settings, name) != default_of(fields[name]):
            raise VitoError(f"vito eval {cls.name}: {flag_name(fields[name])} is not used here ({why}); leave it out")
