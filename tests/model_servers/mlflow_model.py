"""Saves an MLflow pyfunc model for the proxy tests: the same logistic credit-risk scorer,
returning a DataFrame with `label` and `probability` per row.

Run with the model-server virtualenv: ``python mlflow_model.py OUTPUT_DIR``; serve it with
``mlflow models serve -m OUTPUT_DIR --env-manager local``.
"""

import sys

import mlflow.pyfunc
import numpy as np
import pandas as pd

NUMERIC = ["age", "income", "debt_ratio", "credit_lines", "months_employed"]
WEIGHTS = np.array([-0.03, -0.00002, 2.0, 0.05, -0.01])


class CreditRisk(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        df = pd.DataFrame(model_input)
        x = df[NUMERIC].astype(float).fillna(0.0).to_numpy()
        p = 1.0 / (1.0 + np.exp(-(x @ WEIGHTS + 1.0)))
        return pd.DataFrame({"label": (p >= 0.5).astype(int), "probability": p})


if __name__ == "__main__":
    mlflow.pyfunc.save_model(sys.argv[1], python_model=CreditRisk())
