import time

from metaflow import FlowSpec, modal, step


class SleepFlow(FlowSpec):
    """A @modal step that runs until it is interrupted."""

    @step
    def start(self):
        self.next(self.wait)

    @modal
    @step
    def wait(self):
        print("waiting")
        time.sleep(300)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    SleepFlow()
