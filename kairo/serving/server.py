"""Run the inference server with uvicorn until it is stopped, or until the model fails to load."""

from __future__ import annotations

import logging
import sys

from kairo import exitcodes
from kairo.serving.options import ServerConfig


def run(config: ServerConfig) -> int:
    """Serve `config` on its host and port until stopped; the exit code says why it ended.

    On SIGTERM or SIGINT uvicorn finishes the requests in flight, then ends the process by that signal.
    """
    import uvicorn

    from kairo.serving.app import create_app

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    outcome = {"code": exitcodes.OK}
    server: uvicorn.Server | None = None

    def fatal(code: int) -> None:
        outcome["code"] = code
        if server is not None:
            server.should_exit = True

    app = create_app(config, on_fatal=fatal)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           timeout_graceful_shutdown=10))
    names = ", ".join([*(f"{a.name}={a.describe()}" for a in config.adapters), f"{config.preset} (base)"])
    logging.getLogger("kairo.serve").info("serving %s on http://%s:%d%s", names, config.host, config.port,
                                          " (bearer token required)" if config.api_key else "")
    try:
        server.run()
    except SystemExit as err:  # uvicorn exits when it cannot bind the port
        return int(err.code or exitcodes.FAILED)
    if outcome["code"] == exitcodes.OK and not server.started:
        return exitcodes.FAILED
    if outcome["code"] != exitcodes.OK:  # the last line says what went wrong, after uvicorn's shutdown lines
        print(f"serve: {app.state.server.load_error}", file=sys.stderr)
    return outcome["code"]
