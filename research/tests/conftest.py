"""The default suite's fixtures (a fixed seed and float32 policy per test)."""

from tests.conftest import _seed_and_policy  # noqa: F401
