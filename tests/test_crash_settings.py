"""`[crash]` and an executor's `crash_ignore` in the TOML reach the executors the daemon
builds, in-process and in the jobs sent to worker hosts.

Before, crash.CrashConfig took an ignore list and frame prefixes but nothing passed one:
every executor ran with the defaults, and a known splat of a debug kernel counted against
every branch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from patchci.cli import main
from patchci.config import build_settings
from patchci.db import tables as t
from patchci.db.migrate import make_engine
from patchci.executor.job import JobSpec
from patchci.service.runs import make_executor, stream_executor_settings
from tests.test_executor_local import SPLAT
from tests.workersite import TESTS, Redis, Site


def _site(tmp_path: Path, crash: str) -> Site:
    site = Site(tmp_path, Redis(0, tmp_path))
    site.write_config(sleep=0, executors=1)
    (tmp_path / "tree" / TESTS / "slow.sh").write_text(SPLAT)
    from patchci.git import Git

    g = Git(tmp_path / "tree")
    g.add_all()
    g.commit("selftests: a test that splats\n\nSigned-off-by: A <a@example.com>")
    text = site.cfg.read_text()
    site.cfg.write_text(text[: text.index("[broker]")] + crash)
    return site


def _crashes(site: Site) -> list[tuple[str, bool]]:
    engine = make_engine(f"sqlite:///{site.db}")
    with engine.connect() as conn:
        rows = conn.execute(select(t.crashes.c.fingerprint, t.crashes.c.ignored)).all()
    engine.dispose()
    return [(r[0], bool(r[1])) for r in rows]


@pytest.mark.parametrize(
    ("crash", "ignored"),
    [
        ("", False),
        ('[crash]\nignore = ["warning:netdev_thing"]\n', True),
        ('[crash]\nignore = ["re:dev_do_th"]\n', True),
        ('[crash]\nignore = ["warning:unrelated"]\n', False),
    ],
)
def test_the_crash_ignore_list_of_the_config_reaches_the_run(
    tmp_path: Path, crash: str, ignored: bool
) -> None:
    site = _site(tmp_path, crash)
    main(["-c", str(site.cfg), "branch", "--now"])
    ((fingerprint, was_ignored),) = _crashes(site)
    assert "netdev_thing" in fingerprint
    assert was_ignored is ignored


def test_an_executors_own_ignore_adds_to_the_global_one(tmp_path: Path) -> None:
    site = _site(tmp_path, '[crash]\nignore = ["warning:something_else"]\n')
    text = site.cfg.read_text().replace(
        'kind = "local"\n', 'kind = "local"\ncrash_ignore = ["warning:netdev_thing"]\n'
    )
    site.cfg.write_text(text)
    main(["-c", str(site.cfg), "branch", "--now"])
    assert [ig for _, ig in _crashes(site)] == [True]


def test_a_job_for_a_worker_host_carries_the_crash_settings(tmp_path: Path) -> None:
    settings = build_settings({
        "data_dir": str(tmp_path),
        "trees": [{"name": "net", "path": str(tmp_path)}],
        "crash": {"ignore": ["re:known"], "extra_skip_prefixes": ["my_helper"]},
        "executors": [{"name": "ex", "kind": "local", "crash_ignore": ["warning:x"]}],
        "streams": [{"name": "s", "tree": "net", "executors": ["ex"]}],
    }, env={})  # fmt: skip
    (ex,) = stream_executor_settings(settings, settings.streams[0])
    spec = JobSpec("j", 1, "net", "b", "h", "a", "/x", "local", 60.0, ex.model_dump(mode="json"))
    carried = JobSpec.from_json(spec.to_json()).settings()
    built = make_executor(carried, root=tmp_path, ccache=tmp_path, sandbox=None)
    cfg = built.crash_config  # type: ignore[attr-defined]
    assert cfg.ignore == ("re:known", "warning:x")
    assert "my_helper" in cfg.skip_prefixes and len(cfg.skip_prefixes) > 1


def test_a_bad_crash_regex_is_a_config_error(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[crash]\nignore = ["re:(unclosed"]\n')
    assert main(["config", "check", str(cfg)]) == 2
    assert "crash.ignore" in capsys.readouterr().err
