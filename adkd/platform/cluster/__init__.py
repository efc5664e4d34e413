"""Ray: joining or starting a cluster, what one run asks for, the worker and driver of a multi-category run,
its listeners and results, Ray Jobs submission.
"""
