"""Schemathesis hooks for tessera: a fresh bearer token for every test case.

Schemathesis itself calls logout, refresh and "log out everywhere", each of
which invalidates the token it used; a cached token would turn the rest of
the run into 401s. So every case logs in anew (argon2 runs with cheap
parameters in the service started for this run).
"""

import os
import uuid

import requests
import schemathesis

BASE = os.environ["TESSERA_ST_BASE_URL"]
EMAIL = f"schemathesis-{uuid.uuid4().hex[:12]}@example.com"
PASSWORD = "schemathesis password"


def _register_once():
    response = requests.post(f"{BASE}/v1/users", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
    if response.status_code not in (201, 409):
        raise RuntimeError(f"registering the schemathesis user: {response.status_code} {response.text}")


_register_once()


@schemathesis.auth(refresh_interval=None)
class FreshLogin:
    def get(self, case, ctx):
        response = requests.post(f"{BASE}/v1/sessions", json={"email": EMAIL, "password": PASSWORD}, timeout=10)
        response.raise_for_status()
        return response.json()["token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
