"""The proxy's two modes (``CDLAB_PROXY_MODE``): ``single``, whose HAProxy config is what it
always was, and ``swarm``, which takes a dead replica out at its first failed connection."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
from cdlab_proxy import config, document

DATA = Path(__file__).parent / "data"
QUOTES = document.Frontend("quotes", 8001, 9000, "/ready", 50)


def render(mode: config.Mode, run_dir: str = "/run/x") -> str:
    settings = config.Settings(run_dir=run_dir, mode=mode)
    return config.render_config(QUOTES, settings, config.Files.of(settings, "quotes", 3))


def test_the_single_config_is_byte_for_byte_the_one_before_modes() -> None:
    """``proxy-single.cfg`` was rendered by the code before ``Settings.mode`` existed."""
    assert render("single") == (DATA / "proxy-single.cfg").read_text()
    assert config.Settings().mode == "single"


def test_the_swarm_config_changes_only_connections_retries_and_passive_checks() -> None:
    single, swarm = render("single").splitlines(), render("swarm").splitlines()
    changed = [
        line
        for line in difflib.unified_diff(single, swarm, lineterm="", n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    server = (
        "default-server check inter 1s fastinter 250ms downinter 250ms rise 2 fall 3 "
        "resolvers docker init-addr last,none resolve-prefer ipv4 maxconn 50"
    )
    assert changed == [
        "-    timeout connect 2s",
        "+    timeout connect 200ms",
        "-    option redispatch",
        "+    option redispatch 1",
        "+    http-reuse never",
        f"-    {server}",
        f"+    {server} observe layer4 error-limit 1 on-error sudden-death",
        f"-    {server}",
        f"+    {server} observe layer4 error-limit 1 on-error sudden-death",
    ]


@pytest.mark.parametrize(
    ("env", "mode"), [({}, "single"), ({"CDLAB_PROXY_MODE": "swarm"}, "swarm")]
)
def test_the_mode_comes_from_the_environment(env: dict[str, str], mode: str) -> None:
    assert config.from_env(env).mode == mode


@pytest.mark.parametrize("text", ["", "Swarm", "cluster"])
def test_an_unknown_mode_is_refused_with_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match="expected one of single, swarm") as err:
        config.from_env({"CDLAB_PROXY_MODE": text})
    assert repr(text) in str(err.value)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_swarm_config(tmp_path: Path) -> None:
    settings = config.Settings(run_dir=str(tmp_path), mode="swarm")
    files = config.Files.of(settings, "quotes", 1)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config.render_config(QUOTES, settings, files))
    for path in (
        files.state,
        config.map_file(settings, "quotes"),
        config.release_map(settings, "quotes"),
    ):
        Path(path).write_text("")
    out = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr
