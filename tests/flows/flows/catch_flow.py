import time

from metaflow import FlowSpec, catch, modal, step


class CatchFlow(FlowSpec):
    """@catch around two @modal steps: one raises, one outlives its sandbox."""

    @step
    def start(self):
        self.next(self.fragile)

    # The exception is caught inside the sandbox, in attempt 0.
    @catch(var="fragile_failure")
    @modal
    @step
    def fragile(self):
        raise ValueError("fragile step fails on purpose")
        self.next(self.doomed)

    # Modal ends the sandbox, so no code of the task can catch anything; the
    # @catch fallback attempt then runs on this machine.
    @catch(var="doomed_failure")
    @modal(timeout=8)
    @step
    def doomed(self):
        time.sleep(120)
        self.next(self.end)

    @step
    def end(self):
        print("fragile caught: %s: %s" % (self.fragile_failure.type,
                                          self.fragile_failure.exception))
        print("doomed caught: %s" % self.doomed_failure.type)


if __name__ == "__main__":
    CatchFlow()
