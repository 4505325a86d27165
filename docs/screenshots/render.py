"""Render docs/img/landing.png: the exporter's landing page after a short run of demo traffic.

    .venv/bin/python docs/screenshots/render.py [--duration 120] [--output docs/img/landing.png]

Starts `mlmon serve` on 127.0.0.1 (a free port) with examples/mlmon.yml, sends the demo's
traffic with drift from the first second (`mlmon demo --traffic-only --drift-after 0`),
then photographs `GET /` with headless Chromium (`apt-get install chromium` on Debian).
Nothing is written but the PNG.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MLMON = [sys.executable, "-m", "mlmon"]


def start_exporter(log: Path) -> tuple[subprocess.Popen, str]:
    """`mlmon serve` on a port of its own choosing; returns the process and its URL."""
    command = [*MLMON, "serve", "--config", str(ROOT / "examples/mlmon.yml")]
    proc = subprocess.Popen(
        [*command, "--web.listen-address", "127.0.0.1:0"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"mlmon serve did not start:\n{log.read_text()}")


def send_traffic(url: str, seconds: int) -> None:
    args = ["--traffic-only", "--url", url, "--drift-after", "0", "--duration", str(seconds)]
    subprocess.run([*MLMON, "demo", *args], check=True, stdout=subprocess.DEVNULL)


def screenshot(url: str, output: Path, size: str) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no chromium on the PATH: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",  # root in a container has no user namespace for the sandbox
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--screenshot={output}",
                url,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=120, help="seconds of demo traffic")
    ap.add_argument("--output", type=Path, default=ROOT / "docs/img/landing.png")
    ap.add_argument("--window-size", default="900,250", help="width,height in pixels")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_exporter(Path(tmp) / "exporter.log")
        try:
            send_traffic(url, args.duration)
            screenshot(url + "/", args.output.resolve(), args.window_size)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
