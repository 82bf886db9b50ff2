"""The comparison page end to end: a real server the test starts, driven in headless Chromium (Debian's
chromium, through Playwright), with a screenshot saved to runs/test-artifacts/serve-page.png."""

import threading
from pathlib import Path

import httpx
import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS, REPO, TINY_LLM, YAML_DIR
from hopstack.serve import ServedPipeline, ServiceLimits, create_app
from hopstack.testing import free_port, wait_ready

SCREENSHOT = REPO / "runs" / "test-artifacts" / "serve-page.png"
VARIANTS = ["bm25", "decompose-hybrid", "multihop-fixed", "hybrid-rerank-compselect-reader"]
QUESTION = "Who founded the company that ran the steamer Heron?"


@pytest.fixture(scope="module")
def server_url(sample_corpus):
    import uvicorn

    overrides = {"index": str(sample_corpus), "llm": TINY_LLM, "max_tokens": 24}
    pipelines = [ServedPipeline(name, YAML_DIR / f"{name}.yaml", overrides) for name in VARIANTS]
    port = free_port()
    # the CompSelect reader variant takes minutes on busy shared cores: the page, not the 504, is under test here
    app = create_app(pipelines, ServiceLimits(timeout_s=600))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(httpx.Client(base_url=url))
    yield url
    server.should_exit = True
    thread.join(timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_compares_variants_side_by_side(server_url, tmp_path, sample_questions):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            console_errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and console_errors.append(f"{m.location['url']}: {m.text}"))
            page.goto(server_url + "/")
            expect(page.get_by_test_id("ready")).to_have_text("ready", timeout=300_000)
            for name in VARIANTS:
                expect(page.get_by_test_id(f"variant-{name}")).to_be_checked()
            # the placeholder is a question of the served index's dataset: the sample's first
            expect(page.locator("#question")).to_have_attribute("placeholder", sample_questions[0].question)
            page.fill("#question", QUESTION)
            page.fill("#top-k", "3")
            page.get_by_test_id("ask").click()
            cards = page.locator("article.variant[data-done=true]")
            expect(cards).to_have_count(len(VARIANTS), timeout=300_000)

            for name in VARIANTS:
                card = page.get_by_test_id(f"result-{name}")
                expect(card.get_by_test_id("failure")).to_have_count(0)
                expect(card.get_by_test_id("stages").locator("tr")).not_to_have_count(0)
                expect(card.locator("details.graph img")).to_have_count(1)
            bm25 = page.get_by_test_id("result-bm25")
            expect(bm25.get_by_test_id("documents").locator("tr")).to_have_count(4)  # header + top_k 3
            expect(bm25.get_by_test_id("documents")).to_contain_text("Penhallow Ferry Company")
            expect(page.get_by_test_id("result-decompose-hybrid").get_by_test_id("sub-questions")).to_have_count(1)
            hops = page.get_by_test_id("result-multihop-fixed").get_by_test_id("hops")
            expect(hops).to_contain_text("hop 1: Who founded the company")
            expect(hops).to_contain_text("stopped: budget after 3 hop(s)")
            reader = page.get_by_test_id("result-hybrid-rerank-compselect-reader")
            expect(reader.get_by_test_id("answer")).not_to_be_empty()
            request = {"question": QUESTION, "pipeline": "hybrid-rerank-compselect-reader", "top_k": 3}
            answer = httpx.post(server_url + "/v1/answer", json=request, timeout=300).json()["answer"]
            flag = reader.get_by_test_id("unsupported")  # shown exactly when the service says unsupported
            expect(flag).to_have_count(0 if answer["supported"] else 1)
            if not answer["supported"]:
                expect(flag).to_have_text("unsupported: " + "; ".join(answer["unsupported_because"]))
            expect(reader.get_by_test_id("clues")).to_have_count(1)

            graph = bm25.locator("details.graph")
            graph.locator("summary").click()
            expect(graph.locator("img")).to_be_visible()
            assert graph.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.screenshot(path=str(tmp_path / "serve-page.png"), full_page=True)
            assert SCREENSHOT.stat().st_size > 10_000
            # /readyz answers 503 until the models are warm; the page polls it
            assert [e for e in console_errors if not e.startswith(server_url + "/readyz")] == []
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_page_shows_a_clear_message_when_nothing_is_chosen(server_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server_url + "/")
            expect(page.get_by_test_id("ready")).to_have_text("ready", timeout=300_000)
            for name in VARIANTS:
                page.get_by_test_id(f"variant-{name}").uncheck()
            page.fill("#question", "Who founded the company?")
            page.get_by_test_id("ask").click()
            expect(page.get_by_test_id("error")).to_have_text("Choose at least one variant.")
        finally:
            browser.close()
