"""The only place that builds metric families (the collector) and writes the exposition.
May import core, stats and capture's counters interface; never http, the proxy or demo."""
