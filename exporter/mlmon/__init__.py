"""mlmon: monitoring for machine-learning models in production, on Prometheus."""

__version__ = "0.1.0"
