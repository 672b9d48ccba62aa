"""Security basics that a reviewer would otherwise check by reading: unguessable codes bound to
their sale, SQL only with parameters, no credentials in the code, a non-root container."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tomllib

import falcon.testing

from flashsale import domain
from flashsale.sale.keeper import SaleKeeper
from tests.support import ROOT


def test_codes_are_unguessable_and_bound_to_their_sale(
    client: falcon.testing.TestClient, keeper: SaleKeeper
):
    sale, _ = keeper.open_sale()
    answer = client.simulate_post("/checkout", params={"user_id": "u1", "id": "1"})
    assert answer.status_code == 200, answer.text
    code = answer.json["code"]
    sale_id, _, token = code.rpartition(".")
    assert sale_id == sale.sale_id  # bound to the sale it was issued in
    assert len(token) >= 22  # url-safe base64 of 16 bytes from `secrets`: 128 bits
    # A forged token in the right format is just unknown.
    forged = f"{sale.sale_id}.{secrets.token_urlsafe(16)}"
    answer = client.simulate_post("/purchase", params={"code": forged})
    assert answer.status_code == 404 and answer.json["error"]["code"] == "code_not_found"
    # The real token under another sale's id is unknown there too.
    other = domain.sale_id_for(sale.starts_at - 3600, 3600)
    answer = client.simulate_post("/purchase", params={"code": f"{other}.{token}"})
    assert answer.status_code in (404, 410), answer.text
    # ... and the real code still buys.
    assert client.simulate_post("/purchase", params={"code": code}).status_code == 200


def test_ruff_security_rules_are_on_and_sql_is_parameterised():
    """ruff's S rules run on the service (test_the_code_is_ruff_clean lints it in CI); the
    only S608 exceptions interpolate a constant column list, never a value."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "S" in config["tool"]["ruff"]["lint"]["select"]
    for path in (ROOT / "service" / "flashsale").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "noqa: S608" in line:
                fields = re.findall(r"\{([^}]*)\}", line)
                assert fields == ["self._SALE_COLUMNS"], f"{path.name}:{number}: {line.strip()}"


def test_the_code_is_ruff_clean():
    """The lint and the format `make lint` checks, run by the test command so CI holds them."""
    ruff = [sys.executable, "-m", "ruff"]
    for check in (["check", "."], ["format", "--check", "."]):
        done = subprocess.run([*ruff, *check], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_no_credentials_in_the_code():
    """Store URLs come from REDIS_URL / DATABASE_URL only: none carries a password here."""
    with_password = re.compile(r"\b(?:redis|rediss|postgres|postgresql)://[^/\s:@]+:[^@\s]+@")
    for path in [*(ROOT / "service").rglob("*.py"), ROOT / "Dockerfile"]:
        assert not with_password.search(path.read_text()), path


def test_the_container_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the image sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    values = (ROOT / "helm" / "flashsale" / "values.yaml").read_text()
    assert "runAsNonRoot: true" in values
