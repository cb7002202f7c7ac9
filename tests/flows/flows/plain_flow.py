import os

from metaflow import FlowSpec, step


class PlainFlow(FlowSpec):
    """No @modal here: the tests add it with --with modal."""

    @step
    def start(self):
        self.start_gpu = os.environ.get("MODAL_GPU")
        self.next(self.end)

    @step
    def end(self):
        self.end_gpu = os.environ.get("MODAL_GPU")
        print("end ran with GPU %s" % self.end_gpu)


if __name__ == "__main__":
    PlainFlow()
