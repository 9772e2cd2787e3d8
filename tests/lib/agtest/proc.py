"""Stopping the processes a Python test suite started."""

import signal
import subprocess


def stop_proc(p, sig=signal.SIGTERM, timeout=15):
    """Signal p and wait; SIGKILL after timeout. Returns the exit code, or
    None when it had to be killed."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None
    return p.returncode
