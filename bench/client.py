"""The PouchDB client of the benchmark: ``bench/pouch_bench.js`` under node, over JSON lines."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("pouch_bench.js")
NODE_MODULES = Path(__file__).resolve().parent.parent / "tests" / "clients" / "node_modules"


class PouchError(RuntimeError):
    pass


class PouchClient:
    """One node process; requests run one at a time so their timings never overlap."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (NODE_MODULES / "pouchdb-core").is_dir():
            raise RuntimeError("node and tests/clients/node_modules are needed: run `make setup`")
        self.process = subprocess.Popen(
            [node, "--max-old-space-size=4096", str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put(None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, op: str, timeout: float = 600.0, **args: Any) -> Any:
        assert self.process.stdin is not None
        self._next += 1
        self.process.stdin.write(json.dumps({"id": self._next, "op": op, **args}) + "\n")
        self.process.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout)
        except queue.Empty as exc:
            raise PouchError(f"{op}: no answer in {timeout:.0f} s") from exc
        if line is None:
            raise PouchError(f"{op}: the node client exited ({self.process.poll()})")
        answer = json.loads(line)
        if answer["id"] != self._next:
            raise PouchError(f"{op}: answer {answer['id']} for request {self._next}")
        if not answer["ok"]:
            raise PouchError(f"{op}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.process.poll() is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
