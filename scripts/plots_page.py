"""DVC's plots page without the internet, and a headless look at it.

`dvc plots show` / `dvc plots diff` write dvc_plots/index.html, which loads Vega, Vega-Lite
and Vega-Embed from a CDN; offline the page stays blank. This script writes a page template
with the three libraries inlined (one self-contained HTML file, nothing to copy next to it),
runs the real dvc CLI with `--html-template`, and can screenshot the page with headless
Chromium:

    # once, on a machine that reaches the npm registry (the .tgz files can be copied over):
    mkdir -p /tmp/vega && (cd /tmp/vega && npm pack vega@5 vega-lite@5 vega-embed@6)

    python scripts/plots_page.py --js /tmp/vega                      # dvc plots show
    python scripts/plots_page.py --js /tmp/vega --diff HEAD exp-name  # dvc plots diff HEAD exp-name
    python scripts/plots_page.py --js /tmp/vega --screenshot plots.png  # also a 1400 px wide PNG

--js is a folder with vega.min.js, vega-lite.min.js and vega-embed.min.js, or with the .tgz
files `npm pack` writes (their build/*.min.js are read straight from the archives). Neither
the libraries nor the page are written into the repository (dvc_plots/ is git-ignored).
With --screenshot it prints what the rendered page measured: charts drawn, chart errors,
pictures loaded, the page's width against the window's.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # load order: vega-lite needs vega, vega-embed both
WIDTH = 1400  # the window width the page is laid out for and screenshotted at

PAGE = """<!DOCTYPE html>
<html>
<!-- DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined: no CDN needed.
     Built by scripts/plots_page.py; DVC fills in the two placeholders. -->
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    @SCRIPTS@
    <style>
        body { max-width: @WIDTH@px; font-family: sans-serif; }
        img { max-width: 100%; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
    @PROBE@
</body>
</html>
"""

# After the charts have drawn, write what the page looks like into <body data-probe="...">,
# which `chromium --dump-dom` prints: an objective check of the rendered page.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const images = [...document.images];
  document.body.dataset.probe = JSON.stringify({
    charts: document.querySelectorAll(".vega-embed .marks").length,  // one drawn chart each
    chart_errors: [...document.querySelectorAll(".vega-embed .error, .vega-embed pre")].map(e => e.textContent.slice(0, 200)),
    images: images.length,
    images_loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    widest_image: Math.max(0, ...images.map(i => i.getBoundingClientRect().right)),
    widest_chart: Math.max(0, ...[...document.querySelectorAll(".vega-embed")].map(e => e.getBoundingClientRect().right)),
    scroll_width: document.documentElement.scrollWidth,
    window_width: window.innerWidth,
    vega: typeof vega !== "undefined" ? vega.version : null,
  });
}, 1500));
</script>"""


def read_libraries(js_dir: Path) -> dict[str, str]:
    """{library: minified source} from *.min.js files or `npm pack` archives in js_dir."""
    sources = {}
    for name in LIBRARIES:
        plain = js_dir / f"{name}.min.js"
        if plain.is_file():
            sources[name] = plain.read_text(encoding="utf-8")
            continue
        archives = sorted(js_dir.glob(f"{name}-[0-9]*.tgz"))
        if not archives:
            raise FileNotFoundError(f"{js_dir} holds neither {name}.min.js nor {name}-<version>.tgz")
        with tarfile.open(archives[-1]) as tar:
            member = tar.extractfile(f"package/build/{name}.min.js")
            if member is None:
                raise FileNotFoundError(f"{archives[-1]} has no package/build/{name}.min.js")
            sources[name] = member.read().decode("utf-8")
    return sources


def build_template(js_dir: Path, probe: bool = False) -> str:
    """The page template for `dvc plots ... --html-template`, libraries inlined."""
    scripts = []
    for name, source in read_libraries(js_dir).items():
        # DVC fills the template with str.replace on these two placeholders only; a library
        # that happened to contain one would be corrupted, so refuse rather than render nonsense.
        if "{plot_divs}" in source or "{refresh_tag}" in source:
            raise ValueError(f"{name} contains a DVC template placeholder")
        source = source.replace("</script", "<\\/script")  # would end the inline <script> early
        scripts.append(f"<script>/* {name} */\n{source}\n</script>")
    page = PAGE.replace("@WIDTH@", str(WIDTH)).replace("@PROBE@", PROBE if probe else "")
    return page.replace("@SCRIPTS@", "\n    ".join(scripts))


class PageError(Exception):
    """dvc could not write the page (an unknown revision, not a DVC project): one line, exit status 1."""


def render(repo: Path, template: Path, out: Path, diff: list[str] | None) -> Path:
    """Run the dvc CLI in repo; returns the page it wrote. A failing dvc is a PageError naming why."""
    dvc = shutil.which("dvc") or sys.exit("the dvc CLI is not on PATH")
    command = [dvc, "plots", "diff", *diff] if diff is not None else [dvc, "plots", "show"]
    shown = " ".join(command[1:3] + (diff or []))
    command += ["--html-template", str(template.resolve()), "-o", str(out.resolve())]
    result = subprocess.run(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    if result.returncode != 0:
        # dvc's own message (e.g. "ERROR: unexpected error - unknown Git revision 'x'") is the
        # reason; its last non-empty line, not a CalledProcessError traceback.
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise PageError(f"dvc {shown} failed in {repo}: {reason}")
    return out / "index.html"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def headless(page: Path, *args: str, height: int = 3000) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise FileNotFoundError("no chromium / google-chrome on PATH")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=10000", f"--window-size={WIDTH},{height}", *args,
               page.resolve().as_uri()]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=180)


def measure(page: Path) -> dict:
    """Load the page (built with probe=True) headless and return what it measured."""
    dom = headless(page, "--dump-dom").stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    if found is None:
        raise RuntimeError("the page wrote no measurements (did its scripts run?)")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, png: Path, height: int = 3000) -> Path:
    headless(page, f"--screenshot={png.resolve()}", height=height)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--js", type=Path, required=True, help="folder with the three *.min.js or npm pack .tgz files")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: here)")
    parser.add_argument("--diff", nargs="*", metavar="REV", help="dvc plots diff REV...; without it dvc plots show")
    parser.add_argument("--out", type=Path, default=None, help="page folder (default: REPO/dvc_plots)")
    parser.add_argument("--screenshot", type=Path, default=None, help="also write a PNG of the page")
    parser.add_argument("--height", type=int, default=3000, help="screenshot height in px (default 3000)")
    args = parser.parse_args(argv)

    out = args.out or args.repo / "dvc_plots"
    out.mkdir(parents=True, exist_ok=True)
    template = out / "offline_template.html"
    template.write_text(build_template(args.js, probe=args.screenshot is not None), encoding="utf-8")
    page = render(args.repo, template, out, args.diff)
    print(f"page: {page}")
    if args.screenshot is not None:
        print(f"screenshot: {screenshot(page, args.screenshot, args.height)}")
        print("measured:", json.dumps(measure(page), indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
