"""Shared fixtures. Heavy resources (the Docker engine, built sample assets) are session-scoped."""
