#!/usr/bin/env python3
"""Screenshots a plan's Chrome trace (`weft compile --trace`) in Chrome's trace viewer.

The README's screenshot was made with this: catapult's `trace2html` (the viewer behind
chrome://tracing) turns the trace into one HTML file, and headless Chromium renders it.
ui.perfetto.dev opens the same trace file interactively.

    python3 scripts/trace_screenshot.py TRACE.json OUT.png --catapult DIR [--height PX]

Needs: a checkout of github.com/catapult-project/catapult (DIR), Chromium, and the
`playwright` Python package (`pip install playwright`; the system Chromium is used, so no
browser download is needed).
"""

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile


async def shoot(html, out, width, height, crop):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=["--no-sandbox"]
        )
        page = await browser.new_page(viewport={"width": width, "height": height})
        await page.goto("file://" + os.path.abspath(html))
        # The viewer imports the trace asynchronously; give it time to lay out.
        await page.wait_for_timeout(15000)
        await page.screenshot(path=out, clip={"x": 0, "y": 0, "width": width, "height": crop})
        await browser.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("out")
    ap.add_argument("--catapult", required=True, help="a catapult checkout")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=330, help="pixels kept from the top")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        html = os.path.join(tmp, "trace.html")
        tool = os.path.join(args.catapult, "tracing", "bin", "trace2html")
        subprocess.run([sys.executable, tool, args.trace, "--output", html], check=True,
                       stdout=subprocess.DEVNULL)
        asyncio.run(shoot(html, args.out, args.width, 900, args.height))


if __name__ == "__main__":
    main()
