"""A real nginx (the Debian package's binary) as a child process: a reverse proxy on 127.0.0.1, no service."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import HOST, free_port

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size {max_body};
    client_body_buffer_size {max_body};
    keepalive_timeout {keepalive};
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://{host}:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 10s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)


class Nginx:
    """``nginx -c <its own file>`` proxying to ``upstream_port``; ``requests()`` reads its access log."""

    def __init__(self, binary: str, upstream_port: int, max_body: str = "16k", keepalive: str = "1s") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wal2http-nginx-"))
        self.port = free_port()
        config = self.dir / "nginx.conf"
        config.write_text(CONFIG.format(dir=self.dir, max_body=max_body, keepalive=keepalive, host=HOST,
                                        port=self.port, upstream=upstream_port))
        self._stderr = open(self.dir / "stderr", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([binary, "-p", str(self.dir), "-c", str(config), "-e", "stderr"],
                                     stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen within 10 s: {self.log()}") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def log(self) -> str:
        parts = [self.dir / "stderr", self.dir / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def statuses(self) -> list[int]:
        """The status nginx answered to each request, in order (from its access log)."""
        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [int(line.split('"')[2].split()[0]) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
