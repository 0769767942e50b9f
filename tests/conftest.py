"""Session set-up: the lookup kernels compiled on every core before the kernel tests run."""

from __future__ import annotations

import os

import kernel_warmup


def pytest_collection_finish(session):
    # Only when the kernel tests are collected: they use every width of ``WIDTHS``. A run of
    # other modules compiles what it uses as it goes. MEMREC_TEST_WARMUP=0 turns it off.
    if os.environ.get("MEMREC_TEST_WARMUP", "1") == "0":
        return
    if not any(item.path.name == "test_kernels.py" for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    summary = kernel_warmup.warm()
    if reporter is not None:
        reporter.write_line(summary)
