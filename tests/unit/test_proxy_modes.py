"""The proxy's two modes (``CDLAB_PROXY_MODE``): ``single``, whose HAProxy config is what it
was before modes but for which requests may be sent twice, and ``swarm``, which sends a failed
connection elsewhere after 500 ms and asks another replica again, if that is safe, what one did
not answer within the frontend's ``try_timeout``."""

from __future__ import annotations

import dataclasses
import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
from cdlab_proxy import config, document

DATA = Path(__file__).parent / "data"
QUOTES = document.Frontend("quotes", 8001, 9000, "/ready", 50)
# L7 retries (after an empty response, a timeout) only for a request that is safe to send twice
RETRY_SAFE = [
    "    acl retry_safe method GET HEAD OPTIONS PUT DELETE",
    "    acl retry_safe req.hdr(idempotency-key) -m found",
]
RETRY_RULE = "    http-request disable-l7-retry unless retry_safe"


def render(mode: config.Mode, run_dir: str = "/run/x", front: document.Frontend = QUOTES) -> str:
    settings = config.Settings(run_dir=run_dir, mode=mode)
    return config.render_config(front, settings, config.Files.of(settings, front.name, 3))


def test_the_single_config_is_the_one_before_modes_but_for_its_retry_rule() -> None:
    """``proxy-single.cfg`` was rendered by the code before ``Settings.mode`` existed; since,
    only its backends' retry rule changed (from ``if METH_POST``: a PATCH was sent twice, a
    POST with an Idempotency-Key never)."""
    pinned = (DATA / "proxy-single.cfg").read_text()
    assert render("single") == pinned
    assert pinned.splitlines().count(RETRY_RULE) == 2 and "METH_POST" not in pinned
    assert all(pinned.splitlines().count(acl) == 2 for acl in RETRY_SAFE)
    assert config.Settings().mode == "single"


@pytest.mark.parametrize("mode", config.MODES)
def test_in_both_modes_only_a_request_safe_to_send_twice_is_retried_after_it_was_sent(
    mode: config.Mode,
) -> None:
    lines = render(mode).splitlines()
    assert [line for line in lines if "disable-l7-retry" in line] == [RETRY_RULE] * 2
    assert lines.count("backend quotes") == lines.count("backend quotes-match") == 1


@pytest.mark.parametrize("seconds", [1, 3, 45, 300])
def test_a_swarm_waits_the_frontends_try_timeout_for_an_answer_then_asks_again(
    seconds: int,
) -> None:
    front = dataclasses.replace(QUOTES, try_timeout=seconds)
    swarm = render("swarm", front=front).splitlines()
    # only a request safe to send twice waits the try timeout; any other, 30 s
    assert swarm.count(f"    http-request set-timeout server {seconds}s if retry_safe") == 2
    assert swarm.count("    timeout server 30s") == 1
    assert "    retry-on conn-failure empty-response response-timeout" in swarm
    single = render("single", front=front).splitlines()
    assert single.count("    timeout server 30s") == 1  # a single host never re-asks
    assert "    retry-on conn-failure empty-response" in single
    assert render("single", front=front) == render("single")


def test_the_swarm_config_changes_only_connections_waits_and_retries() -> None:
    single, swarm = render("single").splitlines(), render("swarm").splitlines()
    changed = [
        line
        for line in difflib.unified_diff(single, swarm, lineterm="", n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == [
        "-    timeout connect 2s",
        "+    timeout connect 500ms",
        "-    option redispatch",
        "+    option redispatch 1",
        "+    http-reuse never",
        "-    retry-on conn-failure empty-response",
        "+    retry-on conn-failure empty-response response-timeout",
        "+    http-request set-timeout server 3s if retry_safe",
        "+    option http-buffer-request",
        "+    http-request set-timeout server 3s if retry_safe",
        "+    option http-buffer-request",
    ]
    assert not any("observe" in line for line in swarm)  # checks alone take a server out


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
@pytest.mark.parametrize("mode", config.MODES)
def test_haproxy_accepts_the_config_of_each_mode(mode: config.Mode, tmp_path: Path) -> None:
    settings = config.Settings(run_dir=str(tmp_path), mode=mode)
    files = config.Files.of(settings, "quotes", 1)
    cfg = tmp_path / "haproxy.cfg"
    front = dataclasses.replace(QUOTES, try_timeout=45)
    cfg.write_text(config.render_config(front, settings, files))
    for path in (
        files.state,
        config.map_file(settings, "quotes"),
        config.release_map(settings, "quotes"),
    ):
        Path(path).write_text("")
    out = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr
