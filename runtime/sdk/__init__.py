"""The application-side runtime mounted into every app's root filesystem: the ``panoramasdk`` package.

Only ``panoramasdk/`` is mounted (read-only, first on the app's ``PYTHONPATH``); it runs on the image's
Python (3.8 on the real base images) with the standard library and numpy, and imports no host code.
"""
