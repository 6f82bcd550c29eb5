"""Headless Chromium from Debian's `chromium` package, driven by Playwright for Python.

Playwright's own browser download is never used (it cannot be fetched here, and the tests
use the system's browser): the executable is /usr/bin/chromium. The flags keep Chromium
from reaching out to Google's services at start (this machine's network is closed).
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CASEFLOW_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio"]


def have_chromium() -> bool:
    return os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM) is not None


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for a test module."""
    if not have_chromium():
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/system-deps` as root "
                    "(Debian package chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:  # Playwright gives the browser a new empty profile
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(chromium, **context):
    """A fresh page (its own context: no cookies from other tests, 1400×1000 unless `context`
    says otherwise) that records every dialog a script opens, every error a script raises
    and every address it asks for; and its context, to close."""
    context = chromium.new_context(**{"viewport": {"width": 1400, "height": 1000}, **context})
    page = context.new_page()
    page.dialogs = []
    page.script_errors = []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()
    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
    page.requests = []  # every address the page asked for (all must be the status page's)
    page.on("request", lambda request: page.requests.append(request.url))
    return page, context


@pytest.fixture
def browser_page(chromium):
    page, context = open_page(chromium)
    yield page
    context.close()


@pytest.fixture
def new_york_page(chromium):
    """A page of a browser in New York (its time zone; English as in the US)."""
    page, context = open_page(chromium, timezone_id="America/New_York", locale="en-US")
    yield page
    context.close()
