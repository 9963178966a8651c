"""The offline check of rendered report HTML: the page is parsed, so no quoting, entity or letter case hides
a script, a remote resource, a redirect or a remote CSS url()."""

from __future__ import annotations

import pytest

from pipeline.reporting import rendering

SELF_CONTAINED = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="content-type" content="text/html; charset=utf-8">
<style>body{font-family:sans-serif;background:url(data:image/png;base64,AAAA)}
.x{background:url('local.png')}</style>
</head><body style="margin:0">
<img src="data:image/png;base64,AAAA" srcset="chart.png 1x, chart@2x.png 2x" alt="chart">
<a href="../../validation/index.html">data-quality history</a> <a href="#top">top</a>
<img src="cid:trend.2026-09-10@churn-report"> <p>see https://example.com in text: only text</p>
</body></html>"""


def test_a_self_contained_page_has_no_problems() -> None:
    assert rendering.offline_problems(SELF_CONTAINED) == []


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("<SCRIPT>alert(1)</SCRIPT>", "it contains a <script> element"),
        ('<img src="https://cdn.example/x.png">', "remote resource (<img src='https://cdn.example/x.png'>)"),
        ("<img src=//cdn.example/x.png>", "remote resource (<img src='//cdn.example/x.png'>)"),
        ('<img src="HTTPS&#58;//cdn.example/x.png">', "<img src='HTTPS://cdn.example/x.png'>"),
        ('<img src="a.png" srcset="a.png 1x, https://cdn.example/a2.png 2x">', "https://cdn.example/a2.png"),
        ('<picture><source srcset="https://cdn.example/a.webp"></picture>', "<source srcset="),
        ('<link rel="stylesheet" href="https://fonts.example/css">', "<link href="),
        ('<video poster="https://cdn.example/p.jpg"></video>', "<video poster="),
        ('<meta http-equiv="Refresh" content="0; url=https://evil.example/">', "redirects or reloads itself"),
        ('<meta http-equiv="refresh" content="30">', "redirects or reloads itself"),
        ("<style>@import 'theme.css';</style>", "its CSS imports another stylesheet (@import)"),
        (
            '<style>body{background:URL( "https://cdn.example/bg.png" )}</style>',
            "url('https://cdn.example/bg.png')",
        ),
        ('<div style="background-image:url(//cdn.example/bg.png)"></div>', "url('//cdn.example/bg.png')"),
        ('<svg><image xlink:href="https://cdn.example/i.svg"/></svg>', "<image xlink:href="),
    ],
)
def test_each_way_of_reaching_the_network_is_found(fragment: str, expected: str) -> None:
    page = SELF_CONTAINED.replace("</body>", f"{fragment}</body>")
    problems = rendering.offline_problems(page)
    assert any(expected in problem for problem in problems), problems
