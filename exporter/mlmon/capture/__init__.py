"""Zero-code capture: the proxy (its own process), payload protocols, its shared counters, the
Python client. May import core and http's server wiring; never metrics or demo."""
