"""Scan everything the engine printed in the S3 tests for the AWS secret keys
and session tokens it was given.  Runs last in tests/s3 because pytest
collects files in name order."""

from s3helpers import AWS_SECRETS

from enginetest import RECORDED_OUTPUT


def test_aws_secrets_never_printed():
    assert RECORDED_OUTPUT, ("no engine output was recorded: run this test together "
                             "with the S3 tests that start the engine")
    assert AWS_SECRETS, "no AWS secret was handed to the engine"
    leaks = [cmd for cmd, out, err in RECORDED_OUTPUT
             for secret in AWS_SECRETS if secret in out or secret in err]
    assert leaks == [], f"an AWS secret appeared in the output of: {leaks}"


def test_no_sanitizer_reports():
    """With a --enable-sanitizers build, a memory error or leak in any run
    shows up here even when the run's exit status was the expected one."""
    reports = [cmd for cmd, out, err in RECORDED_OUTPUT
               if "Sanitizer" in err or "runtime error:" in err]
    assert reports == [], f"sanitizer reports in the output of: {reports}"
