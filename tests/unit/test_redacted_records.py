"""What cdlab writes down of a run is redacted of the lab's secrets: a release run's record (in
``.lab/runs/``, the route store and on cd), a ``lab.up`` record, a build log and the error that
carries it. Fakes stand for the route store and the builder's engine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from lab import config
from lab.build.builder import Builder, ImageSpec
from lab.errors import ImageBuildError
from lab.estate import lifecycle
from lab.estate.state import State
from lab.progress import Progress, Stage
from lab.proof.redact import MASK
from lab.release import history, records
from tests.unit.fake_ports import FakeEtcd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path: Path) -> State:
    topology = json.loads(config.TOPOLOGY.read_text())
    lab = State(config.parse_topology(topology, ROOT, tmp_path / "lab"))
    lab.dir.mkdir()
    lab.logs.mkdir()
    lab.password_file.write_text("q2W_e3R-t4Y5u6I7o8P9a0SdFgHjKlZx\n")
    return lab


def a_record(db: str) -> records.Record:
    stage = Stage(
        "integration-tests",
        "integration tests",
        "failed",
        1.25,
        f"FAILED test_db - OperationalError: postgresql://app:{db}@db:5432/app",
        {"tests_s": 1.2},
        {"needs": "abc123"},
    )
    return records.Record(
        "deploy",
        "app",
        "3f9c2e1a0b1c",
        "aaaaaaaaaaaa",
        "10.100.200.200:5000/cdlab/app@sha256:" + "a" * 64,
        "blue-green",
        "someone@host",
        "2026-12-01T04:19:21+00:00",
        3.5,
        "failed",
        "integration-tests",
        f"integration tests failed: DB_PASSWORD={db} was refused",
        [dataclasses.asdict(stage)],
        {"tests": 1.25},
        schema={"needs": "abc123"},
    )


def test_a_record_is_redacted_and_keeps_its_keys_and_figures(state: State) -> None:
    db = state.secret("db-password")
    rec = records.redacted(a_record(db), state.secret_values())
    text = json.dumps(dataclasses.asdict(rec))
    assert db not in text
    assert rec.error == f"integration tests failed: DB_PASSWORD={MASK} was refused"
    assert rec.stages[0]["detail"].endswith(f"postgresql://app:{MASK}@db:5432/app")
    assert (rec.stages[0]["key"], rec.stages[0]["figures"]) == (
        "integration-tests",
        {"tests_s": 1.2},
    )
    assert rec.image == a_record(db).image and rec.schema == {"needs": "abc123"}
    clean = dataclasses.replace(a_record("x"), error="", stages=[])
    assert records.redacted(clean, state.secret_values()) == clean  # nothing secret: the same


@dataclasses.dataclass
class FakeLab:
    state: State
    etcd: FakeEtcd = dataclasses.field(default_factory=FakeEtcd)

    @property
    def runs(self) -> Path:
        return self.state.runs

    @property
    def config(self) -> Any:
        return self.state.config


def test_a_kept_record_is_redacted_everywhere_it_goes(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = state.secret("db-password")
    copied: list[Path] = []
    monkeypatch.setattr(records, "copy_to_cd", lambda cfg, path: copied.append(path) or True)
    lab = FakeLab(state)
    history.keep(lab, a_record(db))  # type: ignore[arg-type]
    (path,) = state.runs.glob("deploy-*.json")
    assert copied == [path]
    assert db not in path.read_text() and MASK in path.read_text()
    (shared,) = lab.etcd.get_prefix(records.ETCD_PREFIX).values()
    assert db not in shared.decode()
    assert json.loads(shared)["stages"][0]["key"] == "integration-tests"


def test_a_lab_up_record_is_redacted(state: State) -> None:
    db = state.secret("db-password")
    progress = Progress(out=None)
    with progress.stage("prod's stack", "stack") as st:
        st.changed(f"compose said: DB_PASSWORD={db}")
    lifecycle._record(state, "up", records.now(), progress)
    (path,) = state.runs.glob("up-*.json")
    doc = json.loads(path.read_text())
    assert db not in path.read_text()
    assert doc["stages"][0]["detail"] == f"compose said: DB_PASSWORD={MASK}"


class FakeApi:
    """The builder engine's low-level API: a build whose step printed the database password."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks = chunks

    def _url(self, path: str) -> str:
        return path

    def _post(self, url: str, **kwargs: Any) -> object:
        return object()

    def _stream_helper(self, response: object, decode: bool) -> list[dict[str, Any]]:
        return self.chunks


class FakeClient:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.api = FakeApi(chunks)


def test_a_build_log_and_its_error_are_redacted(state: State) -> None:
    db = state.secret("db-password")
    registry = state.password_file.read_text().strip()
    builder = Builder(state, FakeClient([{"error": f"RUN echo {db} {registry}: exit 1"}]))
    builder._base = "cdlab/base:1"
    spec = ImageSpec("app", "services/app", "Dockerfile", "x")
    with pytest.raises(ImageBuildError) as err:
        builder._build(spec, "cdlab/app:x", b"", "3f9c2e1a0b1c")
    log = (state.logs / "build-app.log").read_text()
    assert log.strip() == f"ERROR: RUN echo {MASK} {MASK}: exit 1"
    assert db not in str(err.value) and registry not in str(err.value)


def test_a_record_that_cannot_be_written_here_still_reaches_the_shared_history(
    state: State, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk on the runner: one line says where the record is kept; the route store still
    gets it (redacted), and there is no file to copy to cd."""
    import errno

    def full(folder: Path, rec: records.Record) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "deploy-x.json"))

    copied: list[Path] = []
    monkeypatch.setattr(records, "write", full)
    monkeypatch.setattr(records, "copy_to_cd", lambda cfg, path: copied.append(path) or True)
    lab = FakeLab(state)
    db = state.secret("db-password")
    history.keep(lab, a_record(db))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "could not be written" in err and "route store only" in err and "is full" in err
    (shared,) = lab.etcd.get_prefix(records.ETCD_PREFIX).values()
    assert db not in shared.decode() and json.loads(shared)["release"] == "3f9c2e1a0b1c"
    assert copied == []
