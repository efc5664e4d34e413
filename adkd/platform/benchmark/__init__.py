"""`adkd benchmark`: grids of models x categories x settings, run through the multi-category Ray path, and their
ranked report.
"""
