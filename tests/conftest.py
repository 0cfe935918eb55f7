"""Shared test settings: hypothesis runs the same on every machine (no deadlines: CI is noisy)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "bridge", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.load_profile("bridge")
