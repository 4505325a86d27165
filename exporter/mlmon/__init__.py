"""mlmon: monitoring for machine-learning models in production, on Prometheus."""

import os

__version__ = "0.1.0"

# The exporter's matrix products are small (a batch of rows by a few dozen columns). A BLAS
# thread pool costs more to wake than such a product takes, and its spinning threads burn
# CPU that ingest and scrapes need: a 1,000-row batch cost 14 ms in one product with the
# pool and 1.7 ms without (bench/suite.py). One thread, unless the environment says more;
# this must happen before numpy loads its BLAS, which is why it is here.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
