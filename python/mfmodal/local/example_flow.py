"""The flow `mfmodal-local example` runs: start and end run locally, train in
a Modal sandbox with an A10G GPU and 8 GiB of memory."""

import os
import shutil
import subprocess

from metaflow import FlowSpec, modal, step


class ModalExampleFlow(FlowSpec):
    @step
    def start(self):
        self.numbers = list(range(1, 11))
        self.next(self.train)

    @modal(gpu="A10G", memory=8192)
    @step
    def train(self):
        # The emulator sets MODAL_GPU to the GPU the sandbox requested. On
        # Modal, nvidia-smi names the GPU the sandbox got.
        self.gpu = os.environ.get("MODAL_GPU", "")
        if not self.gpu and shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
            self.gpu = subprocess.run(query, capture_output=True, text=True).stdout.strip()
        self.total = sum(self.numbers)
        print("train: GPU %s, sum of numbers %d" % (self.gpu or "none", self.total))
        self.next(self.end)

    @step
    def end(self):
        print("end: train ran with GPU %s and computed %d" % (self.gpu or "none", self.total))


if __name__ == "__main__":
    ModalExampleFlow()
