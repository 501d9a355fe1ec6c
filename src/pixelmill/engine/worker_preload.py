"""What the fork server loads once, before it forks any worker: every worker starts warm.

A worker is a fork of the server, so whatever the server imported and initialised, each
worker has for free. Beyond the worker's modules, Pillow imports its forty-odd format
plugins on the first save (``Image.init``, about 17 ms): done here once rather than in
every worker on its first image. HEIF support (pillow_heif, about 50 ms) stays on first
use: few runs meet a HEIF file.
"""

from __future__ import annotations

from PIL import Image

import pixelmill.engine.worker  # noqa: F401  (what every worker runs)

Image.init()
