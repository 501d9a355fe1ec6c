"""A request's choice of renditions: the catalogue narrowed to it, computed once per choice."""

from __future__ import annotations

import threading

from pixelmill.core.specs import OutputFormat, RenderSpec
from pixelmill.engine.base import Choice, ImageJob


class ChosenSpecs:
    """The catalogue narrowed to each job's choice (``RenderSpec.select``), once per choice."""

    def __init__(self, catalogue: RenderSpec) -> None:
        self.catalogue = catalogue
        self._chosen: dict[Choice, RenderSpec] = {}
        self._lock = threading.Lock()

    def of(self, job: ImageJob) -> RenderSpec:
        """The spec ``job`` asked for; ValueError (one line) when the catalogue cannot give it."""
        return self.choice((job.presets, job.formats))

    def choice(self, choice: Choice) -> RenderSpec:
        """The spec of ``(presets, formats)``; ValueError (one line) as ``RenderSpec.select``."""
        presets, formats = choice
        if presets is None and formats is None:
            return self.catalogue
        with self._lock:
            spec = self._chosen.get(choice)
        if spec is None:
            known = [f.value for f in OutputFormat]
            unknown = [f for f in formats or () if f not in known]
            if unknown:
                raise ValueError(f"unknown format {unknown[0]!r} (one of {', '.join(known)})")
            chosen_formats = None if formats is None else [OutputFormat(f) for f in formats]
            spec = self.catalogue.select(presets, chosen_formats)
            with self._lock:
                self._chosen[choice] = spec
        return spec
