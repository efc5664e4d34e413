"""`adkd ui` over a tracking server that is down: the server's address and one line why no runs are listed."""

from __future__ import annotations

import socket

from typer.testing import CliRunner


def test_a_remote_store_that_is_down_still_gets_its_address_and_one_line() -> None:
    from adkd.cli.main import app

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://user:secret@127.0.0.1:{port}"
    result = CliRunner().invoke(app, ["ui"], env={"MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"MLflow UI: http://127.0.0.1:{port}" in result.output
    assert "runs not listed: MLflow tracking server" in result.output and "is unreachable" in result.output
    assert "secret" not in result.output and "Traceback" not in result.output
