"""DVC's plots page as one self-contained file, and a headless look at it.

`dvc plots show` / `dvc plots diff` write dvc_plots/index.html, which loads Vega, Vega-Lite
and Vega-Embed from a CDN (offline the page stays blank) and its pictures from files in
dvc_plots/static/. This script writes a page template with the three libraries inlined,
runs the real dvc CLI with `--html-template`, then writes each picture into the page as a
data: URI and deletes the static/ files it came from: index.html is then one file that
references nothing else, to open offline, mail or archive. It can also screenshot the
whole page with headless Chromium:

    # once, on a machine that reaches the npm registry (the .tgz files can be copied over):
    mkdir -p /tmp/vega && (cd /tmp/vega && npm pack vega@5 vega-lite@5 vega-embed@6)

    python scripts/plots_page.py --js /tmp/vega                      # dvc plots show
    python scripts/plots_page.py --js /tmp/vega --diff HEAD exp-name  # dvc plots diff HEAD exp-name
    python scripts/plots_page.py --js /tmp/vega --screenshot plots.png  # also a PNG of the whole page

--js is a folder with vega.min.js, vega-lite.min.js and vega-embed.min.js, or with the .tgz
files `npm pack` writes (their build/*.min.js are read straight from the archives). Neither
the libraries nor the page are written into the repository (dvc_plots/ is git-ignored).
With --screenshot (needs chromium or google-chrome on the PATH) it prints what the rendered
page measured (charts drawn, chart errors, pictures loaded, the page's size), the PNG is the
whole page, however tall, and a warning line says when anything is wider than the 1400 px
window (a diff of several runs puts their pictures side by side): the PNG is then as wide as
the page.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
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
        /* DVC lays a picture's revisions out in one unbreakable row (white-space: nowrap) in a
           box that clips what sticks out: a diff of three runs hid two of them. Let the row
           wrap, so each revision's picture is seen whole, side by side where they fit. */
        div[style*="nowrap"] { white-space: normal !important; }
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
    // The content's height, not the window's (scrollHeight is at least the window's height).
    page_height: Math.ceil(document.documentElement.getBoundingClientRect().height),
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
    """The page cannot be made or looked at (an unknown revision, no browser): one line, exit status 1."""


def render(repo: Path, template: Path, out: Path, diff: list[str] | None) -> Path:
    """Run the dvc CLI in repo; returns the page it wrote. A failing dvc is a PageError naming why."""
    dvc = shutil.which("dvc")
    if dvc is None:
        raise PageError("the dvc CLI is not on PATH")
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


# The picture types DVC's image renderer takes (dvc_render ImageRenderer.EXTENSIONS).
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".svg": "image/svg+xml"}
IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]*)(")')


def inline_images(page: Path) -> int:
    """Write every picture the page loads from a file into it as a data: URI; returns how many.

    DVC's page refers to copies it wrote in static/ beside it, so index.html alone shows
    empty frames. The copies inlined are deleted (and static/ with them once empty): what
    is left is the one file, and a forgotten picture would show as missing, not pass unseen.
    """
    text = page.read_text(encoding="utf-8")
    inlined: list[Path] = []

    def data_uri(match: re.Match) -> str:
        src = html.unescape(match.group(2))
        if src.startswith("data:") or "://" in src:
            return match.group(0)
        path = page.parent / src
        mime = MIME.get(path.suffix.lower())
        if mime is None:
            raise PageError(f"{page}: picture {src} is of no known type ({', '.join(MIME)})")
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        inlined.append(path)
        return f"{match.group(1)}data:{mime};base64,{encoded}{match.group(3)}"

    # Only the body: the inlined libraries in the head hold "<img src=" in their own code.
    head, body_tag, body = text.partition("<body>")
    if not body_tag:
        raise PageError(f"{page}: no <body> in the page dvc wrote")
    page.write_text(head + body_tag + IMG_SRC.sub(data_uri, body), encoding="utf-8")
    for path in inlined:
        path.unlink(missing_ok=True)  # one picture may appear twice
    static = page.parent / "static"
    if static.is_dir() and not any(p.is_file() for p in static.rglob("*")):
        shutil.rmtree(static)
    return len(inlined)


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def headless(page: Path, *args: str, width: int = WIDTH, height: int = 3000) -> subprocess.CompletedProcess:
    """Headless Chromium on the page in a width x height window; a failure is a PageError."""
    browser = chromium()
    if browser is None:
        raise PageError("no chromium or google-chrome on PATH: --screenshot needs one (Debian: apt-get install chromium)")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=10000", f"--window-size={width},{height}", *args,
               page.resolve().as_uri()]
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=180, errors="replace")
    except subprocess.CalledProcessError as err:
        lines = [line.strip() for line in err.stderr.splitlines() if line.strip()]
        raise PageError(f"{browser} failed on {page}: {lines[-1] if lines else f'exit status {err.returncode}'}") \
            from None
    except subprocess.TimeoutExpired:
        raise PageError(f"{browser} did not finish with {page} within 180 s") from None


def measure(page: Path) -> dict:
    """Load the page (built with probe=True) headless and return what it measured."""
    dom = headless(page, "--dump-dom").stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    if found is None:
        raise PageError(f"{page} wrote no measurements (did its scripts run?)")
    return json.loads(html.unescape(found.group(1)))


def page_size(measured: dict) -> tuple[int, int]:
    """The whole page in px: the window's width or more where something sticks out, the content's height."""
    width = max(measured["window_width"], measured["scroll_width"],
                math.ceil(measured["widest_image"]), math.ceil(measured["widest_chart"]))
    return width, max(1, measured["page_height"])


def overflow_warning(measured: dict) -> str | None:
    """One line when the page is wider than its window (on screen: a sideways scroll), else None."""
    width, _ = page_size(measured)
    if width <= measured["window_width"]:
        return None
    return (f"warning: the page is {width} px wide, wider than the {measured['window_width']} px window "
            f"(pictures end at {math.ceil(measured['widest_image'])} px, charts at "
            f"{math.ceil(measured['widest_chart'])} px); on screen it scrolls sideways")


def screenshot(page: Path, png: Path, width: int = WIDTH, height: int = 3000) -> Path:
    headless(page, f"--screenshot={png.resolve()}", width=width, height=height)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--js", type=Path, required=True, help="folder with the three *.min.js or npm pack .tgz files")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: here)")
    parser.add_argument("--diff", nargs="*", metavar="REV", help="dvc plots diff REV...; without it dvc plots show")
    parser.add_argument("--out", type=Path, default=None, help="page folder (default: REPO/dvc_plots)")
    parser.add_argument("--screenshot", type=Path, default=None, help="also write a PNG of the whole page")
    args = parser.parse_args(argv)

    if args.screenshot is not None and chromium() is None:  # before anything is written
        raise PageError("no chromium or google-chrome on PATH: --screenshot needs one (Debian: apt-get install chromium)")
    try:
        template_text = build_template(args.js, probe=args.screenshot is not None)
    except (OSError, ValueError, tarfile.TarError) as err:
        raise PageError(f"--js {args.js}: {err}") from None
    out = args.out or args.repo / "dvc_plots"
    out.mkdir(parents=True, exist_ok=True)
    template = out / "offline_template.html"
    template.write_text(template_text, encoding="utf-8")
    page = render(args.repo, template, out, args.diff)
    inline_images(page)
    print(f"page: {page}")
    if args.screenshot is not None:
        measured = measure(page)
        width, height = page_size(measured)
        print(f"screenshot: {screenshot(page, args.screenshot, width, height)} ({width}x{height} px)")
        print("measured:", json.dumps(measured, indent=1))
        if warning := overflow_warning(measured):
            print(warning, file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
