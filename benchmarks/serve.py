"""Serving overhead: p50/p99 latency of POST /v1/predict vs the bare model forward, and 16 clients.

    .venv/bin/python benchmarks/serve.py [--requests 100]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="side of the posted JPEGs")
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
        start = time.perf_counter()
        bundle.probabilities(bundle.inputs(payloads[i % len(payloads)], "x.jpg"))
        bare.append(time.perf_counter() - start)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/predict"
    served = []
    with httpx.Client(timeout=60) as client:
        for i in range(args.requests):
            start = time.perf_counter()
            r = client.post(url, files={"file": ("x.jpg", payloads[i % len(payloads)])})
            served.append(time.perf_counter() - start)
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

    def call(i: int) -> int:
        with httpx.Client(timeout=120) as c:
            return c.post(url, files={"file": ("x.jpg", payloads[i % len(payloads)])}).status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(call, range(4 * 16)))
    elapsed = time.perf_counter() - start
    errors = sum(c != 200 for c in codes)
    print(f"  16 concurrent clients: {len(codes) / elapsed:.1f} requests/s, {errors} errors")
    server.should_exit = True
    thread.join(timeout=10)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
