"""Kubernetes API server emulator (apiserver.py) and object builders (fixtures.py) for tests."""
