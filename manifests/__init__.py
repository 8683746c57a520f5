"""framefold manifests: the one schema of a job file, and its loader.

Pure schema and loading: nothing here imports ``tasks``, torch or a model library.
Checks that need a model or a key loaded run in ``tasks.preflight``.

>>> from manifests import load_manifest, ManifestError   # doctest: +SKIP
>>> job = load_manifest("manifests/examples/spring-catalog.yaml")  # doctest: +SKIP
"""

from .items import ItemSpec
from .job import Job, ModelUpscaler, SignerConfig
from .load import load_manifest
from .problems import ManifestError, Problem
from .rules import crop_box
from .schema import manifest_json_schema
from .sections import MotionSpec, UpscaleSpec, WindowSpec
from .settings import Settings

__all__ = [
    "ItemSpec",
    "Job",
    "ManifestError",
    "ModelUpscaler",
    "MotionSpec",
    "Problem",
    "Settings",
    "SignerConfig",
    "UpscaleSpec",
    "WindowSpec",
    "crop_box",
    "load_manifest",
    "manifest_json_schema",
]
