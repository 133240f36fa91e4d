"""LitServe serving the same minilm-embeddings handler, for bench/serve.py to compare against.

    python bench/litserve_minilm.py PORT MAX_BATCH_SIZE MAX_WAIT_MS
"""

import sys
from pathlib import Path

import litserve as ls

TEMPLATE = Path(__file__).resolve().parent.parent / "fixtures" / "templates" / "minilm-embeddings"
sys.path.insert(0, str(TEMPLATE))

from handler import Embedder  # noqa: E402


class EmbedderAPI(ls.LitAPI):
    def setup(self, device):
        self.embedder = Embedder()
        self.embedder.device = device
        self.embedder.setup()

    def decode_request(self, request):
        return self.embedder.parse(request)

    def predict(self, batch):
        return self.embedder.predict(batch)

    def encode_response(self, output):
        return output


def main() -> None:
    port, max_batch_size, max_wait_ms = (int(arg) for arg in sys.argv[1:4])
    api = EmbedderAPI(max_batch_size=max_batch_size, batch_timeout=max_wait_ms / 1000)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
