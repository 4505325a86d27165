"""The only place that builds metric families and writes the exposition: the collector
(orchestration), one module per domain of metrics, and the renderer.
May import core, stats and capture's counters interface; never http, the proxy or demo."""
