"""Scan everything the suite's programs printed for the test token secret.

Runs last because pytest collects files in name order."""

from enginetest import RECORDED_OUTPUT, TEST_TOKEN_SECRET


def test_token_secret_never_printed():
    leaks = [cmd for cmd, out, err in RECORDED_OUTPUT
             if TEST_TOKEN_SECRET in out or TEST_TOKEN_SECRET in err]
    assert RECORDED_OUTPUT, ("no program output was recorded: run this test together "
                            "with the suites that start the engine")
    assert leaks == [], f"the token secret appeared in the output of: {leaks}"
