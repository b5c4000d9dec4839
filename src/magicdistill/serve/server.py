"""Start the server: load the models (warm), build the app, run uvicorn."""

from __future__ import annotations

import signal
from pathlib import Path

LOOPBACK = "127.0.0.1"


def check_serve_args(*, port: int, queue_size: int, max_upload_mb: float, max_seconds: int, keep: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be from 1 to 65535, got {port}")
    if queue_size < 1:
        raise ValueError(f"--queue-size must be >= 1, got {queue_size}")
    if not 0 < max_upload_mb <= 1024:
        raise ValueError(f"--max-upload-mb must be in (0, 1024], got {max_upload_mb}")
    if not 1 <= max_seconds <= 600:
        raise ValueError(f"--max-seconds must be from 1 to 600, got {max_seconds}")
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")


def serve(*, models: list[Path] | None = None, host: str = LOOPBACK, port: int = 8000, queue_size: int = 8,
          max_upload_mb: float = 10.0, max_seconds: int = 12, keep: int = 100, out_dir: Path | None = None,
          device: str = "cpu", dtype: str = "float32", announce=print) -> None:
    check_serve_args(port=port, queue_size=queue_size, max_upload_mb=max_upload_mb, max_seconds=max_seconds,
                     keep=keep)
    from ..api import resolve_model

    for m in models or []:
        if not (resolve_model(m) / "transformer" / "config.json").is_file():
            raise ValueError(f"--model {m}: no model there (expected transformer/config.json)")
    import uvicorn

    from .app import create_app
    from .registry import ModelRegistry

    registry = ModelRegistry.load(models, device=device, dtype=dtype, max_seconds=max_seconds)
    app = create_app(registry, queue_size=queue_size, max_upload_mb=max_upload_mb, out_dir=out_dir, keep=keep)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    for name in registry.pipelines:
        s = registry.pipelines[name].info.settings
        announce(f"model {name}: {s.steps} steps, guidance {s.guidance:g} (recorded)")
    announce(f"serving on http://{host}:{port}  (web page: /, API: /v1/videos)")
    def stop(signum, frame):  # uvicorn re-raises SIGTERM after its clean shutdown: make that a normal exit too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()  # on SIGINT/SIGTERM uvicorn runs the app's shutdown (queued jobs cancelled), then re-raises
    except KeyboardInterrupt:  # Ctrl-C after a clean shutdown is a normal exit
        pass
    announce("stopped")
