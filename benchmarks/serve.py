"""Serving overhead: p50/p99 latency of POST /v1/predict vs the bare model forward, and
requests/s at 16 concurrent clients without and with micro-batching (and their ratio).

    .venv/bin/python benchmarks/serve.py [--requests 100] [--max-batch 16] [--window-ms 5]

Trains a tiny model first (a few seconds), serves it with uvicorn on 127.0.0.1, and sends
requests from this process (bounded in count and time).
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
import uvicorn
import yaml
from common import cpu_note, workdir
from PIL import Image

from xvhpc.data.synth import make_dataset, xray
from xvhpc.models.bundle import load_bundle
from xvhpc.serve.app import create_app
from xvhpc.serve.batching import MicroBatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="side of the posted JPEGs")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    work = workdir("serve")
    make_dataset(work / "data", per_class=10, size=128)
    spec = {
        "name": "serve",
        "data": {"source": str(work / "data"), "image_size": 224, "channels": 1},
        "model": {"arch": "resnet18", "pretrained": "none"},
        "train": {"max_iterations": 2, "batch_size": 4, "workers": 0, "amp": False},
    }
    (work / "spec.yaml").write_text(yaml.safe_dump(spec))
    subprocess.run(
        [sys.executable, "-m", "xvhpc", "run", str(work / "spec.yaml"), "--out", str(work / "run")],
        check=True,
        capture_output=True,
    )
    bundle = load_bundle(work / "run" / "model")
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(xray("covid19", args.size, rng)).save(buf, format="JPEG", quality=90)
        payloads.append(buf.getvalue())
    torch.set_num_threads(1)
    # the bare model: decode + preprocess + forward, in-process, no HTTP
    bare = []
    for i in range(args.requests):
        begin = time.perf_counter()
        bundle.probabilities(bundle.inputs(payloads[i % len(payloads)], "x.jpg"))
        bare.append(time.perf_counter() - begin)
    server, url = start(create_app(bundle))
    served = []
    with httpx.Client(timeout=60) as client:
        for i in range(args.requests):
            begin = time.perf_counter()
            r = client.post(url, files={"file": ("x.jpg", payloads[i % len(payloads)])})
            served.append(time.perf_counter() - begin)
            assert r.status_code == 200
    p = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
    print(
        f"serve benchmark: resnet18 at 224 px, {args.size} px JPEG uploads, {args.requests} requests; {cpu_note()}"
    )
    print(f"  bare model (decode+forward)  p50 {p(bare, 50):6.1f} ms  p99 {p(bare, 99):6.1f} ms")
    print(
        f"  POST /v1/predict             p50 {p(served, 50):6.1f} ms  p99 {p(served, 99):6.1f} ms"
    )
    print(f"  p50 ratio: {p(served, 50) / p(bare, 50):.2f}x")
    unbatched = concurrent(url, payloads, args.clients)
    stop(server)
    batcher = MicroBatcher(bundle, args.max_batch, args.window_ms)
    server, url = start(create_app(bundle, batcher=batcher))
    batched = concurrent(url, payloads, args.clients)
    stop(server)
    print(f"  {args.clients} concurrent clients, unbatched: {unbatched:.1f} requests/s")
    print(
        f"  {args.clients} concurrent clients, batched (max {args.max_batch}, window "
        f"{args.window_ms:g} ms): {batched:.1f} requests/s, "
        f"{batcher.requests / max(batcher.batches, 1):.1f} requests per forward pass"
    )
    print(f"  batched / unbatched: {batched / unbatched:.2f}x")
    shutil.rmtree(work)


def start(app) -> tuple[uvicorn.Server, str]:
    """Serve ``app`` on a free port in a thread; (server, predict URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    server.thread = thread  # type: ignore[attr-defined]
    return server, f"http://127.0.0.1:{port}/v1/predict"


def stop(server: uvicorn.Server) -> None:
    server.should_exit = True
    server.thread.join(timeout=10)  # type: ignore[attr-defined]


def concurrent(url: str, payloads: list[bytes], clients: int) -> float:
    """Requests/s with ``clients`` clients each sending 4 requests back to back."""

    def call(i: int) -> int:
        with httpx.Client(timeout=120) as c:
            return c.post(url, files={"file": ("x.jpg", payloads[i % len(payloads)])}).status_code

    call(0)  # warm up
    begin = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(call, range(4 * clients)))
    elapsed = time.perf_counter() - begin
    errors = sum(c != 200 for c in codes)
    assert errors == 0, f"{errors} requests failed"
    return len(codes) / elapsed


if __name__ == "__main__":
    main()
