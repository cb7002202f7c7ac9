import time

from metaflow import FlowSpec, modal, step


class TimeoutFlow(FlowSpec):
    """A @modal step that runs longer than its sandbox may live."""

    @step
    def start(self):
        self.next(self.slow)

    @modal(timeout=8)
    @step
    def slow(self):
        print("slow step started")
        time.sleep(120)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TimeoutFlow()
