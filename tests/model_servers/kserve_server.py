"""A KServe model server (the `kserve` package's ModelServer) for the proxy tests: a fixed
logistic scorer of credit risk over the numeric inputs, answering the v1 protocol
(`instances` of named rows) and the Open Inference Protocol v2 (one tensor per feature;
outputs `label` [rows] and `probability` [rows, 2]).

Run with the model-server virtualenv: ``python kserve_server.py NAME HTTP_PORT``.
"""

import json
import sys

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

NUMERIC = ("age", "income", "debt_ratio", "credit_lines", "months_employed")
WEIGHTS = np.array([-0.03, -0.00002, 2.0, 0.05, -0.01])


def probability(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.nan_to_num(x) @ WEIGHTS + 1.0)))


class CreditRisk(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, bytes | str):
            payload = json.loads(payload)
        if isinstance(payload, dict):  # v1
            rows = payload["instances"]
            x = np.array([[r.get(k) or 0.0 for k in NUMERIC] for r in rows], dtype=float)
            return {"predictions": [int(p >= 0.5) for p in probability(x)]}
        assert isinstance(payload, InferRequest)
        cols = {i.name: i.as_numpy().reshape(-1) for i in payload.inputs}
        x = np.stack([cols[k].astype(float) for k in NUMERIC], axis=1)
        p = probability(x)
        label = InferOutput(name="label", shape=[len(p)], datatype="INT64")
        label.set_data_from_numpy((p >= 0.5).astype(np.int64))
        proba = InferOutput(name="probability", shape=[len(p), 2], datatype="FP64")
        proba.set_data_from_numpy(np.stack([1 - p, p], axis=1))
        return InferResponse(
            model_name=self.name, infer_outputs=[label, proba], response_id=payload.id
        )


if __name__ == "__main__":
    ModelServer(http_port=int(sys.argv[2]), workers=1, enable_grpc=False).start(
        [CreditRisk(sys.argv[1])]
    )
