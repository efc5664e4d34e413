"""Everything that talks to a service or a cluster, one subpackage per subject (tracking, registry, cluster,
benchmark, tune, storage, services, console); ``runs`` on top is the one entry through which every training starts.
"""

from adkd.platform.registry import legacy_paths

# Registered models of earlier releases pickled classes at paths that have moved since (legacy_paths.MOVED).
legacy_paths.install()
