"""Tiny handlers that exercise every part of the harness contract; no model involved."""

import os
import time
from pathlib import Path


class NegativeInput(ValueError):
    status_code = 422


class Teapot(Exception):
    status_code = 418


class UpstreamDown(Exception):
    status_code = 502


class Doubler:
    """predict() doubles numbers and reports the size of the batch each number was in."""

    def setup(self) -> None:
        self.seconds_per_batch = float(os.environ.get("SECONDS_PER_BATCH", "0"))

    def parse(self, payload):
        if not isinstance(payload, dict) or not isinstance(payload.get("x"), (int, float)):
            raise ValueError('send {"x": <number>}')
        return payload["x"]

    def predict(self, batch: list) -> list:
        time.sleep(self.seconds_per_batch)  # stands in for a model: lets the next batch fill up
        return [
            NegativeInput(f"{x} is negative") if x < 0 else {"doubled": x * 2, "batch_size": len(batch)} for x in batch
        ]

    def routes(self):
        return [
            ("GET", "/items/{item_id}", self.get_item),
            ("POST", "/items", self.create_item),
            ("POST", "/double-many", self.double_many),
            ("POST", "/double-many-sync", self.double_many_sync),
            ("GET", "/count", self.count),
            ("GET", "/teapot", self.teapot),
            ("GET", "/boom", self.boom),
            ("GET", "/upstream", self.upstream),
            ("GET", "/environment", self.environment),
            ("GET", "/upstream-token-seen", self.upstream_token_seen),
            ("GET", "/json/{kind}", self.json_sample),
        ]

    def get_item(self, call):
        return {"id": call.path_params["item_id"], "query": call.query}

    def create_item(self, call):
        return 201, {"created": call.body}

    async def double_many(self, call):
        return [output["doubled"] for output in await call.apredict(call.body["xs"])]

    def double_many_sync(self, call):
        return [output["doubled"] for output in call.predict(call.body["xs"])]

    def count(self, call):
        for n in range(int(call.query.get("to", "3"))):
            yield {"n": n}
        yield "[DONE]"

    def teapot(self, call):
        raise Teapot("I am a teapot")

    def upstream(self, call):
        raise UpstreamDown("the embeddings service at EMBEDDINGS_URL did not answer")

    def boom(self, call):
        raise RuntimeError("secret internal detail")

    def environment(self, call):
        environ = os.environ
        return {"greeting": environ.get("INPUT_GREETING"), "loud": environ.get("INPUT_LOUD"), "device": self.device,
                "omp_wait_policy": environ.get("OMP_WAIT_POLICY"), "omp_num_threads": environ.get("OMP_NUM_THREADS")}

    def upstream_token_seen(self, call):
        """What of the hub's upstream token reaches a handler: its header, its variable."""
        return {"header": call.headers.get("x-hub-upstream-token"), "environment": os.environ.get("HUB_UPSTREAM_TOKEN")}

    def json_sample(self, call):
        """Values whose exact JSON encoding the tests pin down."""
        import numpy as np  # the template environment has it; a handler may answer numpy values as they are

        samples = {
            "plain": lambda: {"floats": [0.1, -0.0, 1e-05, 2.5e20, 0.06382855772972107], "text": "naïve ☃ \u2028",
                              "nested": {"ok": [True, None, 3]}, 7: "integer key"},
            "numpy": lambda: {"vector": np.array([0.1, -2.5, 1e-05], dtype=np.float32), "count": np.int64(3),
                              "score": np.float64(0.5)},
            "big-integer": lambda: {"n": 2**70},
            "not-a-number": lambda: {"nan": float("nan"), "inf": float("inf")},
            "unencodable": lambda: {"a set": {1, 2}},
        }
        return samples[call.path_params["kind"]]()


class WrongLength(Doubler):
    def predict(self, batch: list) -> list:
        return batch[:-1]


class SlowSetup(Doubler):
    """setup() returns only once the test creates the file named by RELEASE_FILE."""

    def setup(self) -> None:
        release = Path(os.environ["RELEASE_FILE"])
        deadline = time.monotonic() + 60
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released setup()")
            time.sleep(0.05)
        super().setup()


class CrashingSetup(Doubler):
    def setup(self) -> None:
        raise RuntimeError("model weights missing at /models/doubler.bin")
