"""End-to-end latency through a running `magicdistill serve`: the 50-step CFG teacher vs the 4-step generator,
both warm in one server, measured side by side; then throughput of the generator with N concurrent clients.

    python benchmarks/serve_latency.py --runs 5 --clients 4 --jobs 3 --threads 1 --out runs/serve_latency.json

Latency = POST /v1/videos -> polling sees "completed" -> the mp4 is downloaded (what an app waits for), with
the same image, prompt and seed for both models. The server is started by this script on a free localhost port
(or give --url to measure one already running with both models). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "portrait.png"
PROMPT = (REPO / "examples" / "portrait.txt").read_text().strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(queue_size: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen([sys.executable, "-m", "magicdistill", "serve", "--port", str(port), "--queue-size",
                             str(queue_size)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if requests.get(base + "/health", timeout=2).ok:
                return proc, base
        except requests.ConnectionError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def one_video(base: str, model: str, seed: int = 0) -> float:
    """Seconds from submit to the downloaded mp4 (retrying politely on 429)."""
    t0 = time.perf_counter()
    while True:
        r = requests.post(base + "/v1/videos", data={"prompt": PROMPT, "model": model, "seed": str(seed)},
                          files={"input_reference": ("p.png", EXAMPLE.read_bytes(), "image/png")}, timeout=60)
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("Retry-After", "1")))
    r.raise_for_status()
    job = r.json()
    while job["status"] in ("queued", "in_progress"):
        time.sleep(0.05)
        job = requests.get(f"{base}/v1/videos/{job['id']}", timeout=30).json()
    if job["status"] != "completed":
        raise RuntimeError(f"job failed: {job['error']}")
    mp4 = requests.get(f"{base}/v1/videos/{job['id']}/content", timeout=60).content
    assert mp4[4:8] == b"ftyp", "not an mp4"
    elapsed = time.perf_counter() - t0
    requests.delete(f"{base}/v1/videos/{job['id']}", timeout=30)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="sequential videos per model (after one warm-up each)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput run")
    ap.add_argument("--jobs", type=int, default=3, help="videos per client in the throughput run")
    ap.add_argument("--url", default=None, help="a running server with models 'generator' and 'teacher'")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here (JSON)")
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads (OMP_NUM_THREADS); 1 keeps "
                    "a shared machine's contention from swamping small jobs [default: torch's]")
    args = ap.parse_args()

    proc, base = (None, args.url.rstrip("/")) if args.url else start_server(args.clients * args.jobs, args.threads)
    try:
        models = [m["id"] for m in requests.get(base + "/v1/models", timeout=10).json()["data"]]
        if not {"generator", "teacher"} <= set(models):
            raise SystemExit(f"the server must serve 'generator' and 'teacher'; it has {models}")
        load_before = os.getloadavg()
        latency: dict[str, list[float]] = {"generator": [], "teacher": []}
        for m in latency:
            one_video(base, m)  # warm-up: first-call allocations
        for i in range(args.runs):  # interleaved, so a change in machine load hits both models alike
            for m in latency:
                latency[m].append(one_video(base, m, seed=i))
        med = {m: statistics.median(v) for m, v in latency.items()}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            per_job = list(pool.map(lambda k: one_video(base, "generator", seed=k), range(args.clients * args.jobs)))
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    result = {
        "runs": args.runs, "median_latency_s": med, "latencies_s": latency,
        "speedup_generator_vs_teacher": med["teacher"] / med["generator"],
        "concurrent": {"clients": args.clients, "videos": len(per_job), "wall_s": wall,
                       "videos_per_min": 60 * len(per_job) / wall, "median_latency_s": statistics.median(per_job)},
        "server_threads": args.threads or "torch default", "load_average_before": load_before, "load_average_after": load_after, "cpus": os.cpu_count(),
    }
    print(f"median end-to-end latency over {args.runs} videos (after one warm-up), one server, both models warm:")
    print(f"  teacher   (50 steps, CFG 2): {med['teacher']:.2f} s")
    print(f"  generator (4 steps):         {med['generator']:.2f} s")
    print(f"  speed-up: {result['speedup_generator_vs_teacher']:.1f}x")
    c = result["concurrent"]
    print(f"generator, {c['clients']} concurrent clients x {args.jobs} videos: {c['videos']} videos in {wall:.1f} s = "
          f"{c['videos_per_min']:.1f} videos/min (median latency {c['median_latency_s']:.2f} s)")
    print(f"load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} CPUs; "
          f"server threads: {args.threads or 'torch default'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
