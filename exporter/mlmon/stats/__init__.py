"""Pure statistics over counts: divergences and tests, drift decisions, performance,
fairness, version comparisons. May import core's schema and layouts; never http or metrics."""
