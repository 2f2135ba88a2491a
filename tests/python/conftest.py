"""Fixtures for testing a real `cairn serve` with real clients.

`cairn` starts the server binary named by `CAIRN_BIN` (scripts/test-api builds it) on a
free loopback port, with a temporary data dir, the development identity, an SQLite
ledger and the scripted model (`scripted_model.py`) as its OpenAI-compatible provider;
installs and enables the packages listed in `CAIRN_PACKAGES` (colon-separated) through
`scripts/install-plugins`; and stops it (SIGTERM) when the session ends.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scripted_model import ScriptedModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model():
    with ScriptedModel() as model:
        yield model


@pytest.fixture(autouse=True)
def _fresh_script(model):
    model.reset()
    yield
    assert model.remaining() == 0, "the test left scripted model answers unused"


class Cairn:
    def __init__(self, url, plugins):
        self.url = url
        self.plugins = plugins

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.status, json.loads(response.read())


@pytest.fixture(scope="session")
def cairn(model):
    binary = os.environ.get("CAIRN_BIN")
    if not binary:
        pytest.fail("set CAIRN_BIN to the cairn binary (scripts/test-api does)")
    packages = [p for p in os.environ.get("CAIRN_PACKAGES", "").split(":") if p]
    with tempfile.TemporaryDirectory(prefix="cairn-openai-test.") as data:
        env = {k: v for k, v in os.environ.items() if not (k.startswith("CAIRN_") or k == "DATABASE_URL")}
        env.update(
            CAIRN_LISTEN="127.0.0.1:0",
            CAIRN_AUTH="dev",
            CAIRN_DATA_DIR=data,
            CAIRN_MODEL_PROVIDER="openai",
            CAIRN_OPENAI_BASE_URL=model.url,
            CAIRN_OPENAI_MODEL="scripted",
            CAIRN_LOG="warn,cairn_runtime=error",
        )
        log_path = Path(data) / "serve.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log)
        try:
            url = None
            deadline = time.monotonic() + 120
            while url is None:
                if server.poll() is not None:
                    pytest.fail(f"cairn serve exited: {log_path.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"cairn serve did not listen: {log_path.read_text()}")
                found = re.search(r"listening on (http://\S+)", log_path.read_text())
                url = found.group(1) if found else None
                time.sleep(0.1)
            installed = subprocess.run(
                [sys.executable, str(ROOT / "scripts/install-plugins"), url, *packages]
                + ["--set", "crm.base_url=https://crm.example.com/api"],
                capture_output=True,
                text=True,
            )
            if installed.returncode != 0:
                pytest.fail(f"installing the plugins failed: {installed.stderr}")
            plugins = {line.split()[0]: line.split()[2] for line in installed.stdout.splitlines()}
            yield Cairn(url, plugins)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            if os.environ.get("CAIRN_TEST_SHOW_LOG"):
                print(log_path.read_text())
