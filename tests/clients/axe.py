"""axe-core (from npm, pinned in package.json) run inside a page of the real headless Chromium.

The console's Content-Security-Policy allows no script from the page, but code
evaluated over the DevTools protocol is not the page's: ``check_accessibility``
evaluates axe's own file there, runs it on the whole document and returns the
violations whose impact is serious or critical.  ``at_width`` lays the page out
as a 390 px phone or a 1280 px desktop first, so narrow-screen problems count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from browser import Browser

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
PHONE, DESKTOP = 390, 1280


async def at_width(browser: Browser, width: int) -> None:
    """Lay the page out at ``width`` CSS pixels (a phone below 600)."""
    mobile = width < 600
    await browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=844 if mobile else 900,
        deviceScaleFactor=2 if mobile else 1,
        mobile=mobile,
    )


async def check_accessibility(browser: Browser) -> list[dict[str, Any]]:
    """The serious and critical axe-core violations on the page now open."""
    await browser.send("Runtime.evaluate", expression=AXE.read_text(encoding="utf-8"))
    run = "axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations))"
    answer = await browser.send(
        "Runtime.evaluate", expression=run, awaitPromise=True, returnByValue=True
    )
    if "exceptionDetails" in answer:
        raise RuntimeError(f"axe-core failed: {answer['exceptionDetails']}")
    found = json.loads(answer["result"]["value"])
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["html"] for n in v["nodes"]][:5],
        }
        for v in found
        if v.get("impact") in BLOCKING
    ]


async def page_width(browser: Browser) -> int:
    """How wide the laid-out document is (wider than the window means sideways scrolling)."""
    return int(await browser.js("document.documentElement.scrollWidth"))
