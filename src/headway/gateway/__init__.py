"""The gateway data path (wired in _app.py)."""
