"""fastgen's benchmark harness: ``python -m bench`` (see bench/README in the project README)."""
