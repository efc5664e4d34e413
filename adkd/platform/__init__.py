"""Everything that talks to a service or a cluster, one subpackage per subject (tracking, registry, cluster,
benchmark, tune, storage, services, console); ``runs`` on top is the one entry through which every training starts.
"""
