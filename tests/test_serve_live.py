"""`magicdistill serve` as a real process on a free localhost port: plain HTTP, the official `openai` client,
concurrent clients, the web page in a real headless browser (Debian's chromium driven by Playwright), and a
clean shutdown that leaves no temporary file."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from toys import decode_served_mp4 as decode

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "portrait.png"
PROMPT = (REPO / "examples" / "portrait.txt").read_text().strip()
ARTEFACTS = REPO / "tmp" / "artefacts"
QUEUE = 4
NOISE = ["_pytree", "Unable to import", "should be kept in float32", "_C_mxfp8", "Failed to load"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server process, its base URL and the TMPDIR it was given (to prove it leaves nothing there)."""
    tmp = tmp_path_factory.mktemp("serve_tmp")
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve_log") / "stderr.txt", "w+")
    # torch's compile cache would default to TMPDIR too; it is not the server's
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("inductor"))}
    proc = subprocess.Popen([sys.executable, "-m", "magicdistill", "serve", "--model", "generator", "--port", str(port),
                             "--queue-size", str(QUEUE)], stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 300:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"the server exited with {proc.returncode}: {log.read()}")
        try:
            if requests.get(base + "/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("the server did not answer /health within 300 s")
    yield {"proc": proc, "base": base, "tmp": tmp, "log": log, "port": port}
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    log.close()




def run_job(base: str, image: bool = True, timeout: float = 300, **fields) -> dict:
    """Submit, poll, download: -> {"status": 429 | "completed" | "failed", ...}."""
    files = {"input_reference": ("p.png", EXAMPLE.read_bytes(), "image/png")} if image else None
    r = requests.post(base + "/v1/videos", data={"prompt": PROMPT, **fields}, files=files, timeout=60)
    if r.status_code == 429:
        return {"status": 429, "retry_after": r.headers.get("Retry-After"), "message": r.json()["error"]["message"]}
    assert r.status_code == 200, r.text
    job = r.json()
    t0 = time.time()
    while job["status"] in ("queued", "in_progress"):
        assert time.time() - t0 < timeout, job
        time.sleep(0.2)
        job = requests.get(f"{base}/v1/videos/{job['id']}", timeout=30).json()
    if job["status"] == "completed":
        job["frames"] = decode(requests.get(f"{base}/v1/videos/{job['id']}/content", timeout=60).content)
    return job


def test_round_trip(server):
    assert requests.get(server["base"] + "/health", timeout=10).json()["models"] == ["generator"]
    job = run_job(server["base"], seed="2")
    assert job["status"] == "completed" and job["frames"].shape == (17, 64, 64, 3)


def test_binds_loopback_only(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # this machine's outward address (nothing is sent)
        try:
            s.connect(("10.255.255.255", 1))
            other = s.getsockname()[0]
        except OSError:
            other = "127.0.0.1"
    if other.startswith("127."):
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        socket.create_connection((other, server["port"]), timeout=2).close()
    socket.create_connection(("127.0.0.1", server["port"]), timeout=2).close()


def test_openai_client(server):
    import openai

    client = openai.OpenAI(base_url=server["base"] + "/v1", api_key="unused-locally", max_retries=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the client marks its video calls deprecated
        with open(EXAMPLE, "rb") as f:
            video = client.videos.create(prompt=PROMPT, input_reference=f, model="generator", size="64x64", seconds="2")
        assert video.object == "video" and video.status in ("queued", "in_progress") and video.seconds == "2"
        t0 = time.time()
        while video.status in ("queued", "in_progress"):
            assert time.time() - t0 < 300
            time.sleep(0.2)
            video = client.videos.retrieve(video.id)
        assert video.status == "completed" and video.progress == 100
        content = client.videos.download_content(video.id)
        assert decode(content.content).shape == (16, 64, 64, 3)  # 2 s at 8 fps
        assert video.id in [v.id for v in client.videos.list()]
        with pytest.raises(openai.BadRequestError, match="64x64"):
            client.videos.create(prompt=PROMPT, size="1280x720")
        assert client.videos.delete(video.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(video.id)


def test_readme_openai_example_runs_as_written(server, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(from openai.*?)```", text[text.index("## Serve"):], re.S).group(1)
    assert "http://127.0.0.1:8000" in code
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(compile(code.replace("http://127.0.0.1:8000", server["base"]), "README.md", "exec"), {})
    assert decode((tmp_path / "talking.mp4").read_bytes()).shape == (17, 64, 64, 3)


def test_bad_upload_then_still_serving(server):
    png = EXAMPLE.read_bytes()
    for body, status in ((b"GIF89a but not really", 400), (png[:300], 400), (png * 4000, 413)):
        r = requests.post(server["base"] + "/v1/videos", data={"prompt": PROMPT},
                          files={"input_reference": ("x.png", body, "image/png")}, timeout=60)
        assert r.status_code == status, r.text
        assert "\n" not in r.json()["error"]["message"]
    assert run_job(server["base"], steps="1")["status"] == "completed"


def test_concurrent_clients_get_a_video_or_a_clean_429(server):
    """8 clients x 3 jobs at once on a queue of 4: each job ends as a video or a 429 with Retry-After; the
    server never fails a job; all within a bounded time."""
    t0 = time.time()

    def client(_):
        return [run_job(server["base"], image=bool(i % 2), steps="1", seed=str(i)) for i in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(client, range(8)) for r in batch]
    elapsed = time.time() - t0
    assert len(results) == 24 and elapsed < 400
    videos = [r for r in results if r["status"] == "completed"]
    refused = [r for r in results if r["status"] == 429]
    assert len(videos) + len(refused) == 24, [r["status"] for r in results]
    assert len(videos) >= QUEUE  # at least the first queue's worth ran
    assert all(r["frames"].shape == (17, 64, 64, 3) for r in videos)
    assert all(int(r["retry_after"]) >= 1 and "queue is full" in r["message"] for r in refused)
    m = requests.get(server["base"] + "/metrics", timeout=10).json()
    assert m["jobs_failed"] == 0 and m["queue_depth"] == 0 and m["mean_latency_s"] > 0


def test_web_page_in_a_headless_browser(server):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(server["base"] + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.includes('4 steps')",
                                   timeout=30_000)
            assert "guidance 1" in page.text_content("#model-info")
            page.set_input_files("#image", str(EXAMPLE))
            page.fill("#prompt", PROMPT)
            page.click("#generate")
            page.wait_for_function("() => { const v = document.getElementById('video');"
                                   " return v.currentSrc && v.readyState >= 2 && v.duration > 0; }", timeout=300_000)
            duration = page.evaluate("document.getElementById('video').duration")
            assert duration == pytest.approx(17 / 8, abs=0.2)
            assert page.get_attribute("#download", "href").endswith("/content")
            assert "completed" in page.text_content("#status") and "4 steps" in page.text_content("#status")
            page.screenshot(path=str(ARTEFACTS / "web_ui.png"))
        finally:
            browser.close()
    assert (ARTEFACTS / "web_ui.png").stat().st_size > 1000


def test_shutdown_cancels_queued_jobs_and_leaves_no_temporary_files(server):
    """Last in this module: SIGTERM with jobs queued -> they are reported cancelled, the process exits 0, and
    its TMPDIR (uploads, videos, atomic-write temporaries) is empty."""
    base, proc = server["base"], server["proc"]
    ids = []
    for _ in range(QUEUE + 1):
        r = requests.post(base + "/v1/videos", data={"prompt": PROMPT, "steps": "50"}, timeout=60)
        if r.status_code == 200:
            ids.append(r.json()["id"])
    assert len(ids) >= QUEUE
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0
    server["log"].seek(0)
    log = server["log"].read()
    assert "cancelled" in log and ids[-1] in log, log
    for noise in NOISE:  # the command line silences third-party noise (cli._quiet)
        assert noise not in log, log
    assert list(server["tmp"].iterdir()) == []
