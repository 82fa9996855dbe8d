"""Polling for a condition in the tests that watch other processes."""

import time


def wait_for(predicate, timeout, what):
    """``predicate()``'s first truthy value, polled every 0.5 s; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
