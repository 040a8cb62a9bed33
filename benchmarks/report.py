"""Results of one scenario run: JSON, a markdown table, PNG charts, the machine.

Why every table carries its peers: performance targets are ratios against a peer or
baseline measured in the same invocation on the same machine, so a number is never
published without the figure it is compared with, nor without the machine it ran on.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


@dataclass
class Target:
    """One performance target: what was required, what was measured, whether it is met."""

    target: str
    measured: str
    met: bool | None


@dataclass
class ScenarioResult:
    scenario: str
    smoke: bool
    parameters: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    charts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(
        timespec="seconds"))
    uses_broker: bool = True
    """False for a scenario measured in process (no Kafka)."""

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"## {self.scenario}{' (smoke)' if self.smoke else ''}: {self.started_at}", "",
            f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB RAM, "
            f"{m['system']}, Python {m['python']}; "
            f"{'broker on the same machine' if self.uses_broker else 'in process, no broker'}; "
            f"load average "
            f"at start {m['load_average_at_start'][0]}. Commit {m['commit']}.",
            _other_cpu_line(m.get("other_cpu")), "",
            "Parameters: " + ", ".join(f"{k}={_cell(v)}" for k, v in self.parameters.items()),
            "",
        ]
        lines += [table.markdown() for table in self.tables]
        if self.targets:
            lines += ["### performance targets", "", "| target | measured | met |",
                      "|---|---|---|"]
            lines += [f"| {t.target} | {t.measured} | "
                      f"{'yes' if t.met else 'no' if t.met is not None else 'n/a'} |"
                      for t in self.targets]
            lines.append("")
        if self.notes:
            lines += ["### Notes", ""] + [f"- {note}" for note in self.notes] + [""]
        lines += [f"![{name}]({name})" for name in self.charts]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / f"{self.scenario}.json"
        json_path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        md_path = out_dir / f"{self.scenario}.md"
        md_path.write_text(self.markdown())
        return json_path, md_path


def _other_cpu_line(other: dict[str, Any] | None) -> str:
    if not other:
        return ""
    top = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in other["top"])
    return (f"\nDuring the run, processes outside this benchmark used {other['avg_cores']:.2f} "
            f"cores on average (max {other['max_cores']:.2f} in a second; {top or 'none'}); "
            f"the broker used {other['broker_avg_cores']:.2f}.")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: not measured
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return " ".join(_cell(v) for v in value)
    if value is None:
        return "-"
    return str(value)


def ratio(value: float | None, base: float | None) -> float:
    """value / base, NaN when either is missing (printed as '-')."""
    if not value or not base:
        return float("nan")
    return value / base


def results_dir(out: Path | None) -> Path:
    """``out`` or benchmarks/results/<UTC timestamp>/ (git-ignored)."""
    if out is not None:
        return out
    return RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for package in ("bytewax", "confluent-kafka", "fastavro", "quixstreams", "grpcio",
                    "rocksdict"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": memory_gb,
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "packages": versions,
        "commit": _commit(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dataflows",
                                "availability", "availability_api"], cwd=REPO,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted engine changes' if dirty else ''}" if head else "unknown"


def new_figure(width: float = 8, height: float = 4.5) -> Any:
    """A matplotlib figure on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    return figure, axes


def save_figure(figure: Any, out_dir: Path, name: str, result: ScenarioResult) -> None:
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out_dir / name)
    plt.close(figure)
    result.charts.append(name)


class OtherCpu:
    """Samples the CPU used by processes outside this benchmark's process tree.

    Why: the dev machine has two cores and is shared (tests, profilers, other work); a
    figure measured while someone else used a core is not comparable, so every report
    says how much CPU others took during the run. The broker (java) is reported apart.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._samples: list[float] = []
        self._broker: list[float] = []
        self._by_name: dict[str, float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> OtherCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, Any]:
        samples = self._samples or [0.0]
        top = sorted(self._by_name.items(), key=lambda item: -item[1])[:3]
        return {"avg_cores": sum(samples) / len(samples), "max_cores": max(samples),
                "broker_avg_cores": sum(self._broker) / max(1, len(self._broker)),
                "top": [(name, seconds) for name, seconds in top if seconds >= 1]}

    def _snapshot(self) -> dict[int, tuple[int, str, float]]:
        """pid -> (ppid, name, cpu seconds)."""
        table = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), name,
                                 (int(fields[11]) + int(fields[12])) / self._tick)
        return table

    def _ours(self, pid: int, table: dict[int, tuple[int, str, float]]) -> bool:
        me = os.getpid()
        seen = 0
        while pid > 1 and seen < 64:
            if pid == me:
                return True
            pid = table[pid][0] if pid in table else 1
            seen += 1
        return False

    def _run(self) -> None:
        previous = self._snapshot()
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            current = self._snapshot()
            now = time.monotonic()
            elapsed = max(now - last, 1e-3)
            other = broker = 0.0
            for pid, (_, name, cpu) in current.items():
                before = previous.get(pid)
                used = cpu - before[2] if before is not None and before[1] == name else 0.0
                if used <= 0 or self._ours(pid, current):
                    continue
                if name == "java":
                    broker += used
                else:
                    other += used
                    self._by_name[name] = self._by_name.get(name, 0.0) + used
            self._samples.append(other / elapsed)
            self._broker.append(broker / elapsed)
            previous, last = current, now
