"""Environments and apps, the namespaces that sandboxes, images and secrets belong to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .ids import new_id

DEFAULT_ENVIRONMENT = "main"


@dataclass
class Environment:
    id: str
    name: str
    created_at: float


@dataclass
class App:
    id: str
    name: str
    environment: str
    created_at: float


class Catalog:
    """Environments and apps. An empty environment name means the default environment, "main"."""

    def __init__(self) -> None:
        self.environments: Dict[str, Environment] = {}
        self.apps: Dict[str, App] = {}
        self._app_ids: Dict[Tuple[str, str], str] = {}
        self.create_environment(DEFAULT_ENVIRONMENT)

    @staticmethod
    def resolve_environment_name(name: str) -> str:
        return name or DEFAULT_ENVIRONMENT

    def create_environment(self, name: str) -> Environment:
        environment = Environment(new_id("en"), name, time.time())
        self.environments[name] = environment
        return environment

    def environment(self, name: str) -> Optional[Environment]:
        return self.environments.get(self.resolve_environment_name(name))

    def find_app(self, environment: str, name: str) -> Optional[App]:
        app_id = self._app_ids.get((self.resolve_environment_name(environment), name))
        return self.apps.get(app_id) if app_id else None

    def create_app(self, environment: str, name: str) -> App:
        environment = self.resolve_environment_name(environment)
        app = App(new_id("ap"), name, environment, time.time())
        self.apps[app.id] = app
        self._app_ids[(environment, name)] = app.id
        return app

    def to_json(self) -> Dict[str, Any]:
        return {
            "environments": {name: {"id": env.id, "created_at": env.created_at}
                             for name, env in self.environments.items()},
            "apps": {app.id: {"name": app.name, "environment": app.environment, "created_at": app.created_at}
                     for app in self.apps.values()},
        }
