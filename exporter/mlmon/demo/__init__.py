"""Demo tooling, apart from the serving path: the demo runner, the local stack, notification
sinks, synthetic data. May import anything; nothing in the serving path imports it."""
