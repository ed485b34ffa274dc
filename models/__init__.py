"""The shipped models and their contracts, installed as the package `alprd.models` (pyproject.toml).

Only here so that `importlib.resources.files("alprd.models")` is a plain folder on disk, in a
checkout and in an installed wheel alike; onnxruntime opens the files by path."""
