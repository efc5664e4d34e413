"""MLflow tracking: the connection and resilient writer, one parent run per command and a child run per category,
the context a child run is handed (and the ModelPublisher it hands its model to), what runs record (params, tags,
redaction). Nothing here imports the registry: the registry imports tracking.
"""
