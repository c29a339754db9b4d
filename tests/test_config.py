"""Configuration: validation messages, precedence, shipped examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.config import build_settings, load_settings
from patchci.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo.toml", "netdev.toml", "mptcp.toml"])
def test_examples_validate(name: str) -> None:
    s = load_settings(ROOT / "examples" / name)
    assert s.trees, "every example configures at least one tree"


def test_netdev_example_is_nipa_like() -> None:
    s = load_settings(ROOT / "examples" / "netdev.toml")
    assert [t.name for t in s.trees] == ["net", "net-next"]
    src = s.sources[0]
    assert src.type == "patchwork" and src.project == "netdevbpf"
    assert {"checkpatch", "fixes_tag", "signed_off_by", "series_format"} <= set(s.trees[0].checks)
    assert s.check_spec("build_clang")[0] == "build"
    # its expectations file is found next to it and is valid
    from patchci.analysis.expectations import load

    assert s.verdicts.expectations == str(ROOT / "examples" / "expectations.toml")
    assert len(load(s.verdicts.expectations).entries) == 2


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"trees": [{"name": "net"}]}, "trees.0: needs 'path'"),
        (
            {"trees": [{"name": "net", "path": "/x", "brnach": "main"}]},
            "trees.0.brnach: unknown key",
        ),
        (
            {"sources": [{"name": "pw", "type": "patchwork", "project": "p"}]},
            "sources.0.patchwork.url: required key is missing",
        ),
        (
            {"sources": [{"name": "pw", "type": "patchwork", "url": "ftp://x", "project": "p"}]},
            "sources.0.patchwork.url",
        ),
        (
            {"trees": [{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]},
            "name 'a' is used twice",
        ),
        (
            {"trees": [{"name": "a", "path": "/x", "checks": ["nope"]}]},
            "'nope' is neither a built-in check",
        ),
        ({"checks": {"x": {"kind": "bogus"}}}, "checks.x: unknown kind 'bogus'"),
        ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"report": {"patchwork": {"context_prefix": "a/b"}}}, "report.patchwork.context_prefix"),
    ],
)
def test_errors_are_one_line_naming_the_key(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_settings(data, env={})
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "from-file"\n')
    assert load_settings(None, env={}).data_dir == "~/.local/share/patchci"
    assert load_settings(f, env={}).data_path == tmp_path / "from-file"
    env = {"PATCHCI_DATA_DIR": "/from/env"}
    assert load_settings(f, env=env).data_dir == "/from/env"
    s = load_settings(f, env=env, overrides={"data_dir": "/from/flag"})
    assert s.data_dir == "/from/flag"
    assert s.db_url == "sqlite:////from/flag/patchci.db"


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "missing.toml")


def test_token_comes_from_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    s = build_settings(
        {
            "sources": [
                {
                    "name": "pw",
                    "type": "patchwork",
                    "url": "http://x",
                    "project": "p",
                    "token_env": "MY_PW_TOKEN",
                }
            ]
        },
        env={},
    )
    src = s.sources[0]
    assert src.type == "patchwork"
    assert src.token() is None
    monkeypatch.setenv("MY_PW_TOKEN", "abc")
    assert src.token() == "abc"
    with pytest.raises(ConfigError, match="unknown key"):
        build_settings(
            {
                "sources": [
                    {
                        "name": "pw",
                        "type": "patchwork",
                        "url": "http://x",
                        "project": "p",
                        "token": "secret",
                    }
                ]
            },
            env={},
        )


def test_worker_example_validates_and_holds_nothing_of_the_server() -> None:
    from patchci.config import load_worker_settings

    ws = load_worker_settings(ROOT / "examples" / "worker.toml")
    assert ws.name == "lab-1" and ws.queues == ("vm",)
    mptcp = load_settings(ROOT / "examples" / "mptcp.toml")
    assert set(ws.executors) == {e.name for e in mptcp.executors}
    assert {e.job_queue for e in mptcp.executors} == set(ws.queues)


def test_a_worker_file_with_a_server_key_is_refused(tmp_path: Path) -> None:
    from patchci.config import load_worker_settings

    f = tmp_path / "w.toml"
    f.write_text('database_url = "sqlite:///x.db"\n[worker]\nname = "w"\n')
    with pytest.raises(ConfigError, match="database_url"):
        load_worker_settings(f)
