"""The page template of ``dvc plots show`` that draws with no network: vega, vega-lite and vega-embed inlined.

DVC's own page loads the three chart libraries from a CDN, so offline it is blank. ``.dvc/config`` points
``plots.html_template`` at ``.dvc/plots/offline.html``, which this module writes from the npm tarballs of
the three libraries (``npm pack vega@5 vega-lite@5 vega-embed@6``)::

    python .dvc/plots/offline_page.py .dvc/plots/offline.html vega-*.tgz vega-lite-*.tgz vega-embed-*.tgz

Each library's minified build is copied byte for byte, after a comment naming the package, its version,
the SHA-256 of the copied file and its licence text, so the page can be checked against npm and shared as
one file. The template has no ``{scripts}`` placeholder: that is where DVC would insert its CDN tags.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOAD_ORDER = ("vega", "vega-lite", "vega-embed")
"""The libraries in the order the page must load them: vega-lite needs vega, vega-embed needs both."""

PLOTS_PLACEHOLDER = "{plot_divs}"
"""Where DVC puts the plots; the one placeholder a DVC page template must have."""


@dataclass(frozen=True)
class Library:
    """One chart library's minified browser build, read from its npm tarball.

    Attributes:
        name: npm package name (``vega``).
        version: its version.
        licence: the SPDX id of package.json.
        licence_text: the tarball's LICENSE file; empty when the tarball has none.
        repository: the source repository named in package.json.
        code: the minified UMD build (``build/<name>.min.js``), unchanged.
    """

    name: str
    version: str
    licence: str
    licence_text: str
    repository: str
    code: str

    @property
    def sha256(self) -> str:
        """SHA-256 of :attr:`code` as UTF-8: the file shipped in the npm package."""
        return hashlib.sha256(self.code.encode("utf-8")).hexdigest()


def read_npm_tarball(path: str | Path) -> Library:
    """The library packed in an npm tarball (``npm pack NAME@VERSION``).

    Raises:
        KeyError: the tarball lacks ``package/package.json`` or ``package/build/<name>.min.js``.
    """
    with tarfile.open(path, "r:gz") as tar:
        def text(member: str) -> str:
            handle = tar.extractfile(member)
            if handle is None:
                raise KeyError(f"{path}: {member} is not a file")
            return handle.read().decode("utf-8")

        meta = json.loads(text("package/package.json"))
        names = set(tar.getnames())
        licence_text = text("package/LICENSE") if "package/LICENSE" in names else ""
        code = text(f"package/build/{meta['name']}.min.js")
    repository = meta.get("repository", "")
    if isinstance(repository, str) and repository.count("/") == 1 and ":" not in repository:
        repository = f"https://github.com/{repository}"  # npm's owner/name shorthand for GitHub
    return Library(
        name=meta["name"],
        version=meta["version"],
        licence=meta.get("license", ""),
        licence_text=licence_text,
        repository=repository.get("url", "") if isinstance(repository, dict) else str(repository),
        code=code,
    )


def script_block(library: Library) -> str:
    """A ``<script>`` element with the library inlined after a comment saying where it came from.

    Raises:
        ValueError: the comment or the code would close the element early (``*/`` or ``</script``).
    """
    licence = library.licence_text.strip() or f"{library.licence} (package.json; the tarball has no LICENSE file)"
    header = "\n".join([
        f"{library.name} {library.version}: build/{library.name}.min.js of the npm package {library.name}@{library.version}",
        f"(npm pack {library.name}@{library.version}), unchanged; sha256 {library.sha256}",
        f"source: {library.repository}",
        f"licence: {library.licence}",
        "",
        licence,
    ])
    if "*/" in header or "</script" in library.code.lower():
        raise ValueError(f"{library.name}: its header or code would end the inlined script early")
    return f"<script>\n/*\n{header}\n*/\n{library.code}\n</script>"


EMBED_DEFAULTS = """<script>
// every plot of DVC's page calls vegaEmbed(id, spec): offer export and the spec, not the online editor
(function () {
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, opt) {
    var defaults = {actions: {export: true, source: true, compiled: false, editor: false}};
    return embed(el, spec, Object.assign(defaults, opt || {}));
  };
})();
</script>"""

STYLE = """<style>
  body { font-family: sans-serif; margin: 16px; }
  body > div { display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }
  table { border-spacing: 15px; }
  header p { color: #555; font-size: 13px; max-width: 60em; }
</style>"""


def page(libraries: Sequence[Library]) -> str:
    """The HTML template: the libraries inlined in :data:`LOAD_ORDER`, then DVC's plots.

    Raises:
        ValueError: a library of :data:`LOAD_ORDER` is missing, or one is given twice.
    """
    by_name = {lib.name: lib for lib in libraries}
    if sorted(by_name) != sorted(LOAD_ORDER) or len(libraries) != len(LOAD_ORDER):
        raise ValueError(f"need exactly the libraries {list(LOAD_ORDER)}, got {[lib.name for lib in libraries]}")
    versions = ", ".join(f"{name} {by_name[name].version}" for name in LOAD_ORDER)
    scripts = "\n".join(script_block(by_name[name]) for name in LOAD_ORDER)
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>retailnb: dvc plots</title>
<!-- written by python -m retailnb.plots.offline_page; works offline ({versions} inlined) -->
{scripts}
{EMBED_DEFAULTS}
{STYLE}
</head>
<body>
<header>
<h2>retailnb: pipeline plots</h2>
<p>Drawn offline by vega-lite ({versions} inlined in this page). Hover a point for its values; the
&hellip; menu of each plot saves it as SVG or PNG.</p>
</header>
{PLOTS_PLACEHOLDER}
</body>
</html>
"""


def main(argv: Sequence[str]) -> int:
    """``python -m retailnb.plots.offline_page OUT TARBALL...``: write the template to OUT."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, tarballs = Path(argv[0]), argv[1:]
    out.write_text(page([read_npm_tarball(t) for t in tarballs]), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
