"""Secrets: named ones from the secrets file, and anonymous ones made from env dicts.

The secrets file is a JSON object that maps each secret name to an object of
string keys and string values::

    {"hf-token": {"HF_TOKEN": "hf_abc"}, "aws": {"AWS_ACCESS_KEY_ID": "AKIA..."}}

Named secrets are visible in every environment.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .ids import new_id


class SecretsFileError(ValueError):
    """A secrets file that cannot be read or does not have the documented shape."""


@dataclass
class Secret:
    id: str
    name: Optional[str]
    kind: str  # "named", "anonymous" (owned by an app) or "ephemeral"
    env: Dict[str, str]
    created_at: float = field(default_factory=time.time)
    app_id: str = ""

    def to_json(self) -> Dict[str, Any]:
        # Values are secret and stay out of the dump; the keys are enough to check a request.
        return {"name": self.name, "kind": self.kind, "keys": list(self.env), "created_at": self.created_at,
                "app_id": self.app_id}


def validate_env_key(key: str) -> Optional[str]:
    """Return why ``key`` cannot be an environment variable name, or None when it can."""
    if not key:
        return "an empty name"
    if "=" in key or "\0" in key:
        return f'the name "{key}" contains "=" or a NUL byte'
    return None


def load_secrets_file(path: str) -> Dict[str, Dict[str, str]]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise SecretsFileError(f"cannot read secrets file {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SecretsFileError(f"invalid JSON in secrets file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SecretsFileError(f"invalid secrets file {path}: expected an object of secret names")
    for name, env in data.items():
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise SecretsFileError(f'invalid secret "{name}" in {path}: expected an object of string values')
        for key in env:
            problem = validate_env_key(key)
            if problem:
                raise SecretsFileError(f'invalid key in secret "{name}" in {path}: {problem}')
    return data


class SecretStore:
    def __init__(self, named: Optional[Dict[str, Dict[str, str]]] = None) -> None:
        self.secrets: Dict[str, Secret] = {}
        self._by_name: Dict[str, str] = {}
        for name, env in (named or {}).items():
            self.put_named(name, env)

    def put_named(self, name: str, env: Dict[str, str]) -> Secret:
        existing = self.by_name(name)
        if existing is not None:
            existing.env = dict(env)
            return existing
        secret = Secret(new_id("st"), name, "named", dict(env))
        self.secrets[secret.id] = secret
        self._by_name[name] = secret.id
        return secret

    def add_anonymous(self, env: Dict[str, str], kind: str, app_id: str = "") -> Secret:
        secret = Secret(new_id("st"), None, kind, dict(env), app_id=app_id)
        self.secrets[secret.id] = secret
        return secret

    def by_name(self, name: str) -> Optional[Secret]:
        secret_id = self._by_name.get(name)
        return self.secrets.get(secret_id) if secret_id else None

    def get(self, secret_id: str) -> Optional[Secret]:
        return self.secrets.get(secret_id)

    @staticmethod
    def missing_keys(secret: Secret, required: List[str]) -> List[str]:
        return [key for key in required if key not in secret.env]

    def to_json(self) -> Dict[str, Any]:
        return {secret.id: secret.to_json() for secret in self.secrets.values()}
