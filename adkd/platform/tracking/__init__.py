"""MLflow tracking: the connection and resilient writer, one parent run per command and a child run per category,
what runs record (params, tags, redaction).
"""
