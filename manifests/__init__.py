"""framefold manifests: the one schema of a job file, and its loader.

>>> from manifests import load_manifest, ManifestError   # doctest: +SKIP
>>> job = load_manifest("manifests/examples/spring-catalog.yaml")  # doctest: +SKIP
"""

from .load import Job, ManifestError, Problem, load_manifest
from .models import ItemSpec, MotionSpec, UpscaleSpec, WindowSpec, manifest_json_schema
from .settings import Settings

__all__ = [
    "ItemSpec",
    "Job",
    "ManifestError",
    "MotionSpec",
    "Problem",
    "Settings",
    "UpscaleSpec",
    "WindowSpec",
    "load_manifest",
    "manifest_json_schema",
]
