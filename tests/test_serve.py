"""`magicdistill serve`'s app in process (starlette's TestClient): the Videos API round trip, validation,
the bounded queue (429 + Retry-After), cancel, a failing job, shutdown. The real shipped generator makes the
videos; a gate around it holds the worker where a test needs a job to stay running."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from toys import decode_served_mp4 as decode
from magicdistill.serve.app import create_app
from magicdistill.serve.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "portrait.png"
PROMPT = (REPO / "examples" / "portrait.txt").read_text().strip()


class Gate:
    """Wraps a Pipeline: a call waits until released (or raises ``fail`` once)."""

    def __init__(self, pipe):
        self.pipe, self.info = pipe, pipe.info
        self.open, self.entered, self.fail = threading.Event(), threading.Event(), None
        self.open.set()

    def resolve(self, **kw):
        return self.pipe.resolve(**kw)

    def __call__(self, *args, progress=None, **kw):
        self.entered.set()
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        while not self.open.wait(0.05):
            progress(0, 1)  # lets a cancel through while held
        return self.pipe(*args, progress=progress, **kw)


@pytest.fixture(scope="module")
def registry():
    reg = ModelRegistry.load(["generator"])
    reg.pipelines["generator"] = Gate(reg.pipelines["generator"])
    return reg


@pytest.fixture
def client(registry, tmp_path):
    gate = registry.pipelines["generator"]
    gate.open.set()
    gate.fail = None
    app = create_app(registry, queue_size=2, max_upload_mb=0.5, out_dir=tmp_path / "videos", keep=50)
    with TestClient(app) as c:
        c.out_dir, c.gate = tmp_path / "videos", gate
        yield c
    gate.open.set()


def submit(client, image: bytes | None = None, **fields):
    files = {"input_reference": ("frame.png", image, "image/png")} if image is not None else None
    return client.post("/v1/videos", data={"prompt": PROMPT, **fields}, files=files)


def wait(client, video_id, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        job = client.get(f"/v1/videos/{video_id}").json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {video_id} still {job['status']} after {timeout} s")




def test_models_health_and_page(client):
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["generator"]
    m = models[0]
    assert m["settings"]["steps"] == 4 and m["settings"]["guidance"] == 1.0
    assert m["size"] == "64x64" and m["num_frames"] == 17 and m["fps"] == 8.0 and m["default"]
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "/v1/videos" in page.text and "<video" in page.text


def test_submit_poll_download(client):
    r = submit(client, EXAMPLE.read_bytes(), seed="5")
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "video" and job["status"] in ("queued", "in_progress")
    assert job["id"].startswith("video_") and len(job["id"]) == 6 + 32
    assert job["size"] == "64x64" and job["seconds"] == "2.125" and job["model"] == "generator"
    done = wait(client, job["id"])
    assert done["status"] == "completed" and done["progress"] == 100 and done["completed_at"] >= done["created_at"]
    assert done["settings"]["steps"] == 4 and done["settings"]["seed"] == 5  # the recorded settings
    content = client.get(f"/v1/videos/{job['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    frames = decode(content.content)
    assert frames.shape == (17, 64, 64, 3)
    assert abs(frames[0].astype(float) - np.asarray(__import__("PIL.Image").Image.open(EXAMPLE).convert("RGB")
                                                    .resize((64, 64))).astype(float)).mean() < 25  # frame 0: the image
    listed = client.get("/v1/videos").json()
    assert listed["object"] == "list" and job["id"] in [v["id"] for v in listed["data"]]
    assert client.get("/metrics").json()["jobs_completed"] >= 1
    assert client.delete(f"/v1/videos/{job['id']}").json() == {"id": job["id"], "object": "video.deleted",
                                                                "deleted": True}
    assert client.get(f"/v1/videos/{job['id']}").status_code == 404
    assert list(client.out_dir.iterdir()) == []  # the video went with the job


def test_prior_and_seconds(client):
    job = submit(client, None, seconds="3", steps="1").json()
    done = wait(client, job["id"])
    assert done["status"] == "completed" and done["seconds"] == "3"
    assert decode(client.get(f"/v1/videos/{job['id']}/content").content).shape[0] == 24


def one_line_error(r, status, *words):
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert "\n" not in message
    for w in words:
        assert w in message, message
    return message


@pytest.mark.parametrize("fields, words", [
    ({"size": "1280x720"}, ["size", "64x64"]),
    ({"seconds": "4.5"}, ["seconds", "1 to 12"]),
    ({"seconds": "13"}, ["seconds", "1 to 12"]),
    ({"model": "sora-2"}, ["sora-2", "generator"]),
    ({"steps": "0"}, ["steps"]),
    ({"steps": "many"}, ["steps", "integer"]),
    ({"guidance": "-1"}, ["guidance"]),
    ({"prompt": "  "}, ["prompt"]),
])
def test_bad_fields_are_400_naming_what_is_supported(client, fields, words):
    one_line_error(submit(client, None, **fields), 400, *words)


def test_bad_uploads_are_4xx_and_the_server_keeps_serving(client):
    png = EXAMPLE.read_bytes()
    one_line_error(submit(client, b"this is not an image"), 400, "input_reference", "not a readable image")
    one_line_error(submit(client, png[: len(png) // 2]), 400, "input_reference", "not a readable image")
    one_line_error(submit(client, png + b"\0" * 600_000), 413, "too large")

    def chunks():  # no Content-Length: the body is streamed, and refused once past the limit
        for _ in range(100):
            yield b"x" * 65536

    r = client.post("/v1/videos", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    one_line_error(r, 413, "too large")
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/metrics").json()["queue_depth"] == 0  # nothing was queued
    job = submit(client, png, steps="1").json()
    assert wait(client, job["id"])["status"] == "completed"


def test_full_queue_is_429_with_retry_after_then_cancel(client):
    client.gate.open.clear()
    client.gate.entered.clear()
    running = submit(client, None, steps="1").json()
    assert client.gate.entered.wait(60)  # the worker holds it: the queue (size 2) is empty
    queued = [submit(client, None, steps="1").json() for _ in range(2)]
    r = submit(client, None, steps="1")
    one_line_error(r, 429, "queue is full")
    assert int(r.headers["Retry-After"]) >= 1
    assert client.get("/metrics").json()["queue_depth"] == 2
    # cancel a queued job and the running one; the other queued job still runs
    assert client.delete(f"/v1/videos/{queued[0]['id']}").status_code == 200
    assert client.delete(f"/v1/videos/{running['id']}").status_code == 200
    assert client.get(f"/v1/videos/{running['id']}").status_code == 404
    client.gate.open.set()
    assert wait(client, queued[1]["id"])["status"] == "completed"
    assert client.get(f"/v1/videos/{queued[0]['id']}").status_code == 404
    assert client.get("/metrics").json()["jobs_cancelled"] >= 1
    assert [p.name for p in client.out_dir.iterdir()] == [f"{queued[1]['id']}.mp4"]


def test_a_failing_job_reports_one_line_and_the_server_keeps_serving(client):
    client.gate.fail = RuntimeError("out of memory on the device\nsecond line")
    job = submit(client, None, steps="1").json()
    failed = wait(client, job["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "generation_failed", "message": "out of memory on the device"}
    assert one_line_error(client.get(f"/v1/videos/{job['id']}/content"), 409, "failed")
    ok = submit(client, None, steps="1").json()
    assert wait(client, ok["id"])["status"] == "completed"
    assert client.get("/metrics").json()["jobs_failed"] == 1


def test_shutdown_cancels_queued_jobs_and_leaves_no_files(registry, tmp_path):
    gate = registry.pipelines["generator"]
    gate.open.clear()
    gate.entered.clear()
    app = create_app(registry, queue_size=3)  # its own temporary folder
    out = app.state.out_dir
    with TestClient(app) as c:
        running = submit(c, None, steps="1").json()
        assert gate.entered.wait(60)
        queued = [submit(c, None, steps="1").json() for _ in range(3)]
        jobs = app.state.jobs
    # leaving the block ran the app's shutdown
    gate.open.set()
    from magicdistill.serve.jobs import Job, ShuttingDown

    with pytest.raises(ShuttingDown):
        jobs.submit(Job(id="video_x", model="generator", prompt="p", params={}, image=None, seconds="1", size="64x64"))
    for q in queued:
        j = jobs.get(q["id"])
        assert j.status == "failed" and j.error["code"] == "cancelled"
    assert jobs.get(running["id"]).status == "failed"  # stopped at its next step, nothing written
    assert not out.exists()  # the server's own folder is removed


@pytest.mark.parametrize("args, words", [
    (["--port", "0"], "--port"),
    (["--queue-size", "0"], "--queue-size"),
    (["--model", "no/such/folder"], "no/such/folder"),
])
def test_bad_serve_flags_are_one_line_errors(args, words):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "magicdistill", "serve", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.stderr
