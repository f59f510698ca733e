import os

from etcd_cluster import etcd_cluster  # noqa: F401  (the fixture, for any test module)
from hypothesis import HealthCheck, settings

# Default: enough examples to find shape bugs, bounded for 2-core machines.
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None)
# CI replays the same examples every run, so a submission's verdict does not depend on luck;
# random exploration happens in development runs and in the "thorough" profile.
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
default_profile = "ci" if os.environ.get("CI") else "default"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default_profile))
