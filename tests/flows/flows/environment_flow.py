import hashlib
import os

from metaflow import FlowSpec, environment, modal, step


class EnvironmentFlow(FlowSpec):
    """A @modal step that reads a Modal secret, @environment and env values."""

    @step
    def start(self):
        self.next(self.read)

    @environment(vars={"FROM_ENVIRONMENT": "environment-value"})
    @modal(secrets=["team-token"], env={"FROM_DECORATOR": "decorator-value"})
    @step
    def read(self):
        token = os.environ.get("TEAM_TOKEN", "")
        # Only a digest leaves the sandbox, so the token appears in no output.
        self.token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        self.from_environment = os.environ.get("FROM_ENVIRONMENT")
        self.from_decorator = os.environ.get("FROM_DECORATOR")
        print("token length %d" % len(token))
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    EnvironmentFlow()
