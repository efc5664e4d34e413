"""The inspection station: a web page for the line over the registry's models, every verdict logged.

``log`` (the verdict database), ``images`` (upload checks and where kept images go), ``served`` (which
registered version answers for a category), ``inspector`` (one image in, one logged verdict out),
``watch`` (a folder a camera writes into), ``web`` (the FastAPI pages), ``access`` (the token),
``server`` (uvicorn), ``feedback_data`` (confirmed feedback into a new data version).
"""
