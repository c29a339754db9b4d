"""`patchci export junit|kcidb BRANCH` on the demo's test branches (real runs of the demo's
contest, a kernel splat included): JUnit read back by junitparser, KCIDB validated by
kcidb-io's own v5 schema, both compared with what the database holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import kcidb_io
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from patchci.cli import main
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.model import Outcome
from tests.web_server import demo_dir

__all__ = ["demo_dir"]


def _config(tmp_path: Path, demo: Path) -> Path:
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f'data_dir = "{demo}"\n')
    return cfg


def _branches(demo: Path) -> list[str]:
    rs = ResultsStore.open(f"sqlite:///{demo / 'patchci.db'}", upgrade=False)
    try:
        return [b.name for s in ("net-next",) for b in rs.stream_branches(s)]
    finally:
        rs.close()


def test_junit_export_reads_back_with_the_same_counts(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, demo_dir)
    names = _branches(demo_dir)
    assert names, "the demo has test branches"
    rs = ResultsStore.open(f"sqlite:///{demo_dir / 'patchci.db'}", upgrade=False)
    try:
        for name in names:
            out = tmp_path / f"{name}.xml"
            assert main(["-c", str(cfg), "export", "junit", name, "-o", str(out)]) == 0
            runs = rs.branch_results(name)
            suites = list(JUnitXml.fromfile(str(out)))
            assert [s.name for s in suites] == [r.executor for r in runs]
            for suite, run in zip(suites, runs, strict=True):
                cases = {c.name: c for c in suite}
                assert set(cases) == {t.name for t in run.tests}
                for t in run.tests:
                    kinds = {type(r) for r in cases[t.name].result}
                    if t.crashed:
                        assert kinds == {Error} and cases[t.name].result[0].type == "crash"
                    elif t.final in (Outcome.FAIL, Outcome.TIMEOUT):
                        assert kinds == {Failure}
                    elif t.final is Outcome.SKIP:
                        assert kinds == {Skipped}
                    else:
                        assert kinds == set(), (t.name, t.final)
                assert suite.errors == sum(1 for t in run.tests if t.crashed)
    finally:
        rs.close()
    assert any("crash" in p.read_text() for p in tmp_path.glob("*.xml"))  # the demo's splat
    assert main(["-c", str(cfg), "export", "junit", "no-such-branch"]) == 2
    assert "not found" in capsys.readouterr().err


def test_kcidb_export_is_valid_v5_and_carries_the_patchset(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, demo_dir)
    store = Store.open(f"sqlite:///{demo_dir / 'patchci.db'}", upgrade=False)
    rs = ResultsStore(store.engine)
    try:
        for name in _branches(demo_dir):
            assert main(["-c", str(cfg), "export", "kcidb", name]) == 0
            data = json.loads(capsys.readouterr().out)
            kcidb_io.schema.V5_3.validate_exactly(data)  # raises on any schema violation
            row = rs.branch(name)
            (checkout,) = data["checkouts"]
            assert checkout["git_commit_hash"] == row.head
            raws = [p.raw for sid in row.series for p in store.load_series(sid).patches]
            if raws:
                chain = "".join(hashlib.sha256(r).hexdigest() + "\n" for r in raws)
                assert checkout["patchset_hash"] == hashlib.sha256(chain.encode()).hexdigest()
                assert checkout["message_id"] and "<" not in checkout["message_id"]
            runs = rs.branch_results(name)
            assert len(data["builds"]) == len(runs)
            assert len(data["tests"]) == sum(len(t.subtests) + 1 for r in runs for t in r.tests)
            crashed = [t for r in runs for t in r.tests if t.crashed]
            assert len(data["incidents"]) == sum(len(t.real_crashes) for t in crashed)
            assert len(data["issues"]) == len({c.fingerprint for t in crashed
                                               for c in t.real_crashes})  # fmt: skip
            by_id = {t["id"]: t for t in data["tests"]}
            for inc in data["incidents"]:
                assert by_id[inc["test_id"]]["status"] == "FAIL"
    finally:
        store.close()
    name = _branches(demo_dir)[0]
    assert main(["-c", str(cfg), "export", "kcidb", name, "--origin", "Bad Origin"]) == 2
    assert "KCIDB origins are" in capsys.readouterr().err
