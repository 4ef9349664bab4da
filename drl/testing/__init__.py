"""Builders of tiny random models with the real architectures, for tests and offline tries (not shipped models)."""
