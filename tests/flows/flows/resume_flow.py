import os

from metaflow import FlowSpec, environment, modal, step


class ResumeFlow(FlowSpec):
    """train fails while FAIL_TRAIN=1 is set where the flow starts."""

    @modal
    @step
    def start(self):
        self.base = 7
        self.next(self.train)

    # The value is read where the flow file is loaded and sent to the sandbox.
    @environment(vars={"FAIL_TRAIN": os.environ.get("FAIL_TRAIN", "0")})
    @modal
    @step
    def train(self):
        if os.environ.get("FAIL_TRAIN") == "1":
            raise RuntimeError("train fails on purpose")
        self.result = self.base * 6
        self.next(self.end)

    @step
    def end(self):
        print("result: %d" % self.result)


if __name__ == "__main__":
    ResumeFlow()
