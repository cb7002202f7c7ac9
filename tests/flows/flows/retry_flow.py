from metaflow import FlowSpec, current, modal, retry, step


class RetryFlow(FlowSpec):
    """A @modal step that fails on its first attempt and succeeds on the second."""

    @step
    def start(self):
        self.next(self.flaky)

    @retry(times=1, minutes_between_retries=0)
    @modal
    @step
    def flaky(self):
        self.attempt = current.retry_count
        if current.retry_count == 0:
            raise RuntimeError("attempt 0 fails on purpose")
        print("attempt %d succeeds" % current.retry_count)
        self.next(self.end)

    @step
    def end(self):
        print("flaky succeeded on attempt %d" % self.attempt)


if __name__ == "__main__":
    RetryFlow()
