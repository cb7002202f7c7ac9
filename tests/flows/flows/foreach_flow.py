from metaflow import FlowSpec, modal, step


class ForeachFlow(FlowSpec):
    """Twenty @modal tasks in a foreach, joined in a @modal task."""

    @step
    def start(self):
        self.items = list(range(20))
        self.next(self.square, foreach="items")

    @modal(cpu=0.5, memory=512)
    @step
    def square(self):
        self.value = self.input * self.input
        print("square of %d is %d" % (self.input, self.value))
        self.next(self.join)

    @modal
    @step
    def join(self, inputs):
        self.total = sum(task.value for task in inputs)
        self.next(self.end)

    @step
    def end(self):
        print("total of squares: %d" % self.total)


if __name__ == "__main__":
    ForeachFlow()
