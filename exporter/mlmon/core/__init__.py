"""The exporter's state and its inputs: config, baselines, schema, count vectors, the
ground-truth store, snapshots, the monitor. May import stats; never http, metrics, capture, demo."""
