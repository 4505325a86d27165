"""The documentation: the reference in docs/ documents every metric family, threshold,
limit, refusal reason, proxy and server setting; every relative link resolves; and the
README's "Monitor your own model in five minutes" runs, command by command, against a real
`mlmon serve` (and its proxy in front of a real model server)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import yaml
from helpers import wait_until
from mlmon.capture.counters import UPSTREAM_FAILURES, ProxyStats
from mlmon.capture.protocols import CAPTURE_FAILURES, PROTOCOLS
from mlmon.cli import build_registry
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import (
    LIMIT_DEFAULTS,
    THRESHOLDS,
    ProxySettings,
    StoreSettings,
    load_config,
)
from mlmon.core.decoding import REJECT_REASONS
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic
from test_tasks import _monitor, _rows

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
# Where each kind of fact lives.
METRICS = DOCS["metrics.md"]  # families, and the label values of the proxy's counters
CONFIGURATION = DOCS["configuration.md"]  # config keys, thresholds, limits
API = DOCS["api.md"]  # refusal reasons


def _families(mon: Monitor) -> set[str]:
    registry = build_registry(mon, ProxyStats())
    return {f.name for f in registry.collect() if not f.name.startswith("process_")}


def loaded_monitors(tmp_path: Path) -> list[Monitor]:
    """A binary (versions, groups, labels), a multiclass and a regression model, each with
    labelled traffic: every metric family has samples."""
    mon = Monitor(load_config(ROOT / "examples/mlmon.yml"))
    rows = synthetic.events(synthetic.credit_spec(), 1_200, seed=1)
    m = mon.models["credit-risk"]
    for i, r in enumerate(rows):  # two versions and two groups, all labelled
        r["version"] = "v2" if i % 2 else "v1"
        r["groups"] = {"gender": "f" if i % 3 else "m"}
        r["latency_seconds"] = 0.01 * (1 + i % 5)
    m.ingest(synthetic.without_labels(rows))
    m.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    (tmp_path / "mc").mkdir()
    multiclass = _monitor(tmp_path / "mc", "multiclass")
    mc_rows = _rows(200, seed=3, task="multiclass")
    for i, r in enumerate(mc_rows):
        r["id"] = i
    multiclass.models["m"].ingest(mc_rows)
    multiclass.models["m"].ingest_labels([{"id": r["id"], "label": r["label"]} for r in mc_rows])
    regression = _monitor(tmp_path, "regression")
    reg_rows = _rows(200, seed=2)
    for i, r in enumerate(reg_rows):
        r["id"] = i
    regression.models["m"].ingest(reg_rows)
    regression.models["m"].ingest_labels([{"id": r["id"], "label": r["label"]} for r in reg_rows])
    attributed = _attributed_monitor(tmp_path / "attr")
    # with a shared store (nothing listens there: its families exist all the same)
    store = StoreSettings(url="redis://127.0.0.1:1/0", timeout_seconds=0.1)
    shared = Monitor(replace(load_config(ROOT / "examples/mlmon.yml"), store=store))
    return [mon, multiclass, regression, shared, attributed, _embedded_monitor(tmp_path / "emb")]


def _attributed_monitor(tmp: Path) -> Monitor:
    """A regression model whose training data and events carry feature attributions."""
    tmp.mkdir()

    def attributed(rows: list[dict]) -> list[dict]:
        for r in rows:
            f = r["features"]
            r["attributions"] = {"size": 0.01 * f["size"], "rooms": 0.5 * f["rooms"]}
        return rows

    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in attributed(_rows(2_000, 1))))
    model = {"name": "attributed", "task": "regression", "baseline": "a.json"}
    model["drift"] = {"min_samples": 200}
    (tmp / "c.yml").write_text(yaml.safe_dump({"models": [model]}))
    cfg = load_config(tmp / "c.yml")
    write_profile(
        build_profile(cfg.models[0], read_training_data(data, None, False)), tmp / "a.json"
    )
    monitor = Monitor(cfg)
    monitor.models["attributed"].ingest(attributed(_rows(300, seed=5)))
    return monitor


def _embedded_monitor(tmp: Path) -> Monitor:
    """A regression model with an embedding feature (whose families it alone has)."""
    tmp.mkdir()

    def embedded(rows: list[dict]) -> list[dict]:
        for i, r in enumerate(rows):
            r["features"] = {"emb": [float((i * j) % 7) for j in range(1, 5)]}
        return rows

    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in embedded(_rows(300, 1))))
    model = {"name": "embedded", "task": "regression", "baseline": "e.json"}
    model["features"] = {"emb": {"kind": "embedding", "dim": 4, "components": 2}}
    model["drift"] = {"min_samples": 30}  # the 50 events below get the embedding's score
    (tmp / "c.yml").write_text(yaml.safe_dump({"models": [model]}))
    cfg = load_config(tmp / "c.yml")
    write_profile(
        build_profile(cfg.models[0], read_training_data(data, ["emb"], False)), tmp / "e.json"
    )
    monitor = Monitor(cfg)
    monitor.models["embedded"].ingest(embedded(_rows(50, seed=5)))
    return monitor


def _documented_metrics(text: str) -> set[str]:
    return set(re.findall(r"`(mlmon_[a-z_0-9<>]+)`", text))


def test_every_metric_family_is_in_the_metric_reference(tmp_path):
    names = set().union(*(_families(m) for m in loaded_monitors(tmp_path)))
    assert len(names) > 30
    documented = _documented_metrics(METRICS)
    # counters are documented with their _total suffix
    missing = [
        name
        for name in sorted(names)
        if not name.startswith("mlmon_threshold_")
        and name not in documented
        and f"{name}_total" not in documented
    ]
    everywhere = _documented_metrics("\n".join([README, *DOCS.values()]))
    stale = [
        d
        for d in sorted(everywhere)
        if "<" not in d
        and d not in names
        and d.removesuffix("_total") not in names
        and not d.startswith("mlmon_threshold_")
    ]
    assert not missing and not stale, (
        f"undocumented metric families (docs/metrics.md): {missing}; "
        f"the docs name metrics that do not exist: {stale}"
    )


def _table_rows(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("| "))


def test_every_threshold_limit_and_reason_is_documented():
    rows = _table_rows(CONFIGURATION)
    missing = [
        *(key for key in THRESHOLDS if f"| `{key}` |" not in rows),
        *(f"limits.{key}" for key in LIMIT_DEFAULTS if f"| `limits.{key}` |" not in rows),
        *(r for r in REJECT_REASONS if r != "internal_error" and f"`{r}`" not in API),
        *(
            word
            for word in (*CAPTURE_FAILURES, *UPSTREAM_FAILURES, *PROTOCOLS)
            if f"`{word}`" not in METRICS
        ),
    ]
    assert not missing, f"undocumented in docs/configuration.md, api.md or metrics.md: {missing}"


def test_every_proxy_and_server_setting_is_in_the_config_table():
    import dataclasses

    from mlmon.core.config import ServerSettings

    rows = _table_rows(CONFIGURATION)
    keys = {"routes": "models.<name>"}
    proxy = [
        keys.get(f.name, f.name.removesuffix("_seconds")) for f in dataclasses.fields(ProxySettings)
    ]
    server = [f.name.removesuffix("_seconds") for f in dataclasses.fields(ServerSettings)]
    missing = [
        *(f"proxy.{key}" for key in proxy if f"`proxy.{key}`" not in rows),
        *(f"server.{key}" for key in server if f"`server.{key}`" not in rows),
    ]
    assert not missing, f"settings missing from docs/configuration.md's table: {missing}"


def test_dockerfile_copies_files_that_exist():
    text = (ROOT / "exporter/Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part


# ---------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def _relative_links(text: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


def _broken_links(source: Path) -> list[str]:
    broken = []
    for link in _relative_links(source.read_text()):
        path, _, anchor = link.partition("#")
        target = (source.parent / path).resolve() if path else source
        if not target.exists():
            broken.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text()):
            broken.append(link)  # a heading that does not exist
    return broken


def test_every_relative_link_resolves():
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = {s.name: b for s in sources if (b := _broken_links(s))}
    assert not broken, f"links to files or headings that do not exist: {broken}"


def test_the_readme_is_a_front_page():
    assert len(README.splitlines()) <= 320
    picture = re.search(r"!\[[^]]*\]\((docs/img/[^)]+\.png)\)", README)
    assert picture, "the README shows no picture from docs/img/"
    png = ROOT / picture.group(1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000
    for heading in ("Quick start", "Monitor your own model in five minutes", "Reference"):
        assert f"(#{_slug(heading)})" in README, f"the table of contents lacks {heading}"


# ---------------------------------------------------------------- five minutes

FIVE_MINUTES = README.split("## Monitor your own model in five minutes", 1)[1].split("\n## ")[0]


@dataclass
class Command:
    text: str  # as written, continuation lines included
    expected: list[str] = field(default_factory=list)  # the output shown under it


def code_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)


def shell_commands(block: str) -> list[Command]:
    """Commands of a shell block; `# ...` lines right under a command are its output, a
    comment after a blank line (or first in the block) is prose."""
    commands: list[Command] = []
    continued = after_blank = False
    for line in block.splitlines():
        if continued:
            commands[-1].text += "\n" + line
        elif line.startswith("# ") and commands and not after_blank:
            commands[-1].expected.append(line[2:])
        elif line.strip() and not line.startswith("#"):
            commands.append(Command(line))
        after_blank = not line.strip()
        continued = bool(commands) and not _complete(commands[-1].text)
    return commands


def _complete(text: str) -> bool:
    """False while a line ends in a backslash or a quote is still open."""
    try:
        shlex.split(text)
    except ValueError:
        return False
    return not text.endswith("\\")


class Walkthrough:
    """Runs the README's steps in an empty directory with the `mlmon` command on the PATH;
    the addresses the README uses are mapped to the ports the real processes bound."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        bindir = Path(sys.executable).parent
        self.env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
        self.mlmon = shutil.which("mlmon", path=self.env["PATH"])
        assert self.mlmon, f"no `mlmon` command next to {sys.executable}"
        self.ports: dict[str, str] = {}
        self.processes: list[subprocess.Popen] = []
        self.proxied = 0  # calls sent through the proxy

    def local(self, text: str) -> str:
        for written, real in self.ports.items():
            text = text.replace(written, real)
        return text

    def run_block(self, lang: str, body: str) -> None:
        if lang == "yaml":
            (self.dir / "mlmon.yml").write_text(body)
        elif lang == "python":
            self.run([sys.executable, "-c", self.local(body)], body)
        else:
            assert lang == "sh", lang
            for command in shell_commands(body):
                self.run_command(command)

    def run_command(self, command: Command) -> None:
        if command.text.startswith("mlmon serve"):
            self.serve(command.text)
            return
        out = self.run(["bash", "-o", "pipefail", "-c", self.local(command.text)], command.text)
        if command.expected:
            assert out.splitlines() == command.expected, command.text
        if "127.0.0.1:8081" in command.text:
            self.proxied += 1
            wait_until(self.captured, 20, f"the proxy to capture {command.text}")

    def captured(self) -> bool:
        """The proxy captures a call just after its response has gone back: the README's
        next step is taken once the exporter has profiled every call made so far (one row
        each), as a reader would find it a moment later; a failed call is never profiled."""
        url = f"http://{self.local('127.0.0.1:9797')}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        counts = re.findall(r"^mlmon_profiled_events_total\{.*\} (\S+)$", text, re.M)
        return sum(float(c) for c in counts) >= self.proxied

    def run(self, argv: list[str], what: str) -> str:
        done = subprocess.run(
            argv, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{what}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def serve(self, text: str) -> None:
        """`mlmon serve` as written, on ports of its own choosing (port 0), in front of a
        real model server when the README names an upstream."""
        argv = shlex.split(self.local(text.replace("127.0.0.1:8081", "127.0.0.1:0")))
        assert argv[:2] == ["mlmon", "serve"], text
        if "--upstream" in argv:
            argv[argv.index("--upstream") + 1] = self.model_server()
        log = self.dir / f"serve-{len(self.processes)}.log"
        argv = [self.mlmon, *argv[1:], "--web.listen-address", "127.0.0.1:0"]
        self.start(argv, log)
        exporter = wait_until(lambda: _bound(log, r"serving \d+ model\(s\) on "), 60, text)
        self.ports["127.0.0.1:9797"] = f"127.0.0.1:{exporter}"
        if "--upstream" in argv:
            proxy = wait_until(lambda: _bound(log, r"proxy on "), 30, "the proxy")
            self.ports["127.0.0.1:8081"] = f"127.0.0.1:{proxy}"

    def model_server(self) -> str:
        """The TF Serving test server (`tests/tfserving.py`), on a free port."""
        proc = self.start([sys.executable, str(ROOT / "tests/tfserving.py"), "0"], None)
        port = re.search(rb":(\d+)\s*$", proc.stdout.readline())  # "listening on H:P"
        assert port, "the model server did not say its port"
        return f"http://127.0.0.1:{port.group(1).decode()}"

    def start(self, argv: list[str], log: Path | None) -> subprocess.Popen:
        out = log.open("wb") if log else subprocess.PIPE
        err = subprocess.STDOUT if log else subprocess.DEVNULL
        proc = subprocess.Popen(argv, cwd=self.dir, env=self.env, stdout=out, stderr=err)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
            proc.wait(10)


def _bound(log: Path, prefix: str) -> str | None:
    found = re.search(prefix + r"http://127\.0\.0\.1:(\d+)/", log.read_text())
    return found.group(1) if found else None


def test_the_five_minute_path_runs_as_written(tmp_path):
    blocks = code_blocks(FIVE_MINUTES)
    langs = [lang for lang, _ in blocks]
    # the config, toy data, baseline, serve, curl, client, results, proxy
    assert langs.count("yaml") == 1 and langs.count("python") == 2 and len(blocks) >= 8, langs
    walk = Walkthrough(tmp_path)
    try:
        for lang, body in blocks:
            walk.run_block(lang, body)
    finally:
        walk.stop()
    assert (tmp_path / "baselines/credit-risk.json").exists()
    assert "127.0.0.1:8081" in walk.ports, "the proxy was never started"


def test_the_walkthrough_checks_what_a_command_prints():
    """What the walk-through relies on: `# ...` under a command is compared with its output,
    a continued command stays one command, and prose comments are not output."""
    commands = shell_commands("# prose\ncurl -s a \\\n  -d '{}'\n# {\"ok\":1}\n\n# prose\nls\n")
    assert [c.text for c in commands] == ["curl -s a \\\n  -d '{}'", "ls"]
    assert [c.expected for c in commands] == [['{"ok":1}'], []]
    assert any(c.expected for _, b in code_blocks(FIVE_MINUTES) for c in shell_commands(b))


@pytest.mark.parametrize("payload", re.findall(r"-d '(\{.*?\})'", FIVE_MINUTES, flags=re.S))
def test_every_payload_of_the_five_minute_path_is_json(payload):
    import json

    assert isinstance(json.loads(payload), dict)
