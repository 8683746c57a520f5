import pytest

from tests.fixtures.tiny_models import build_tiny_pipeline


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with tiny text-to-video AnimateDiff (``ad``) and Wan (``wan``) pipelines, one per test module."""
    root = tmp_path_factory.mktemp("t2v")
    build_tiny_pipeline("animatediff", "t2v", root / "ad")
    build_tiny_pipeline("wan", "t2v", root / "wan")
    return root
