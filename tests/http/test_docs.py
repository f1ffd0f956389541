"""`/docs` works offline: every asset of the Swagger UI page comes from the app itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import LiveApp
from tests.observability.test_dashboard import chromium

# Everything a page can make a browser fetch: src/href attributes and `url:` in its script.
_REFERENCES = re.compile(r"""(?:src|href)="([^"]*)"|url:\s*'([^']*)'""")


def test_docs_page_references_only_same_origin_urls_that_answer(live: LiveApp) -> None:
    page = live.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    found = [a or b for a, b in _REFERENCES.findall(page.text)]
    assert len(found) == 4, found  # stylesheet, favicon, script, the OpenAPI document
    assert "http" not in page.text.replace("http-equiv", "")  # no absolute URL anywhere
    for url in found:
        assert url.startswith("/") and not url.startswith("//"), url
        answer = live.client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 500, url
    bundle = live.client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert "max-age" in bundle.headers["cache-control"]
    assert live.client.get("/docs/assets/..%2F..%2Fkeys.json").status_code == 404
    assert live.client.get("/redoc").status_code == 404  # the CDN-only page is gone


@pytest.mark.browser
def test_docs_render_in_a_browser_without_internet(live: LiveApp, tmp_path: Path) -> None:
    dumped = chromium("--dump-dom", f"{live.url}/docs", profile=tmp_path / "profile")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    # Swagger UI ran: it fetched /openapi.json and drew one block per operation.
    assert "/v1/audio/speech" in dumped.stdout and "/tts" in dumped.stdout
    assert "opblock" in dumped.stdout
