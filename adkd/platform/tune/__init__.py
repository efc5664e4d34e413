"""`adkd tune`: each model's search space and the Ray Tune run scored on held-out normals with synthetic defects."""
