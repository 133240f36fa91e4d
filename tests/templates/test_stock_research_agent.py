"""The stock-research-agent app over the whole stack: embeddings, vector store, generator, RAG pipeline.

The test recomputes every checked figure itself, straight from the CSV that ships in
vega-datasets, with its own (deliberately different) arithmetic.
"""

import base64
import contextlib
import csv
import math
import re
import statistics
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness.support import template_python
from tests.templates.agent_helpers import trained_generator

pytestmark = pytest.mark.templates

KNOWN_TICKERS = ["AAPL", "AMZN", "GOOG", "IBM", "MSFT"]


@pytest.fixture(scope="module")
def stack(run_template, tmp_path_factory):
    checkpoint = trained_generator().checkpoint
    with contextlib.ExitStack() as running:
        embeddings = running.enter_context(run_template("minilm-embeddings"))
        store = running.enter_context(
            run_template("vector-store", env={"DATA_DIR": str(tmp_path_factory.mktemp("vectors"))})
        )
        generator = running.enter_context(run_template("text-generator", env={"MODEL_PATH": str(checkpoint)}))
        rag = running.enter_context(
            run_template(
                "rag-pipeline",
                env={"EMBEDDINGS_URL": embeddings.url, "VECTOR_STORE_URL": store.url, "GENERATOR_URL": generator.url},
            )
        )
        agent = running.enter_context(run_template("stock-research-agent", env={"RAG_URL": rag.url, "LLM_URL": ""}))
        yield {"agent": agent, "rag": rag, "generator": generator}


@pytest.fixture(scope="module")
def agent(stack):
    return stack["agent"]


@pytest.fixture(scope="module")
def reports(agent) -> dict[str, dict]:
    collected = {}
    for ticker in KNOWN_TICKERS:
        status, body = agent.post_json("/v1/report", {"ticker": ticker})
        assert status == 200, body
        collected[ticker] = body
    return collected


@pytest.fixture(scope="module")
def stocks_csv() -> Path:
    """The CSV inside the vega-datasets package of the template environment."""
    code = "import pathlib, vega_datasets; print(pathlib.Path(vega_datasets.__file__).parent / '_data' / 'stocks.csv')"
    return Path(subprocess.check_output([str(template_python()), "-c", code], text=True).strip())


def expected_figures(stocks_csv: Path, ticker: str) -> dict:
    with stocks_csv.open(newline="") as handle:
        rows = [
            (datetime.strptime(row["date"], "%b %d %Y"), float(row["price"]))
            for row in csv.DictReader(handle)
            if row["symbol"] == ticker
        ]
    rows.sort()
    prices = [price for _, price in rows]
    years = (rows[-1][0] - rows[0][0]).days / 365.25
    growth = prices[-1] / prices[0]
    monthly = [later / earlier - 1 for earlier, later in zip(prices, prices[1:])]
    worst_fall = min(prices[j] / prices[i] - 1 for i in range(len(prices)) for j in range(i, len(prices)))
    return {
        "total_return": growth - 1,
        "annualised_return": math.exp(math.log(growth) / years) - 1,
        "annualised_volatility": statistics.stdev(monthly) * math.sqrt(12),
        "max_drawdown": worst_fall,
        "short_average": statistics.fmean(prices[-3:]),
        "long_average": statistics.fmean(prices[-10:]),
        "observations": len(prices),
    }


def table_value(markdown: str, measure: str) -> str:
    match = re.search(rf"^\| {re.escape(measure)} \| (.+) \|$", markdown, re.MULTILINE)
    assert match, f"no row {measure!r} in the report"
    return match.group(1)


@pytest.mark.parametrize("ticker", KNOWN_TICKERS)
def test_its_figures_match_an_independent_computation_from_the_csv(reports, stocks_csv, ticker):
    report, expected = reports[ticker], expected_figures(stocks_csv, ticker)
    figures, markdown = report["figures"], report["markdown"]
    for name in ("total_return", "annualised_return", "annualised_volatility", "short_average", "long_average"):
        assert figures[name] == pytest.approx(expected[name], rel=1e-9), name
    assert figures["max_drawdown"]["depth"] == pytest.approx(expected["max_drawdown"], rel=1e-9)
    assert figures["observations"] == expected["observations"]
    assert table_value(markdown, "Total return") == f"{expected['total_return']:.1%}"
    assert (
        table_value(markdown, "Annualised volatility (monthly returns)") == f"{expected['annualised_volatility']:.1%}"
    )
    assert table_value(markdown, "Maximum drawdown").startswith(f"{expected['max_drawdown']:.1%} from ")
    assert table_value(markdown, "10-month moving average").startswith(f"${expected['long_average']:,.2f} ")
    annualised = re.escape(f"{expected['annualised_return']:.1%}")
    assert re.search(
        rf"^\| Annualised return \(over [0-9.]+ years\) \| {annualised} \|$",
        markdown,
        re.MULTILINE,
    )


def test_msft_matches_known_values_from_the_data(reports):
    # Pinned by hand from stocks.csv: Jan 2000 39.81, Mar 2010 28.80; peak Mar 2000 43.22, trough Feb 2009 15.81.
    markdown = reports["MSFT"]["markdown"]
    assert table_value(markdown, "First price") == "$39.81 (Jan 2000)"
    assert table_value(markdown, "Last price") == "$28.80 (Mar 2010)"
    assert table_value(markdown, "Total return") == "-27.7%"
    assert table_value(markdown, "Maximum drawdown").startswith("-63.4% from Mar 2000 to Feb 2009")


def test_it_names_the_price_data_source_and_draws_the_chart(reports):
    report = reports["GOOG"]
    assert "Source: vega-datasets 0.9.0, stocks.csv (monthly prices, Aug 2004 to Mar 2010" in report["markdown"]
    svg = report["chart_svg"]
    assert svg.startswith("<svg") and svg.count("<polyline") == 3
    embedded = re.search(r"\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", report["markdown"]).group(1)
    assert base64.b64decode(embedded).decode() == svg


def test_it_cites_the_company_documents_retrieved_through_rag(reports):
    for ticker, report in reports.items():
        findings = report["findings"]
        assert findings, ticker
        assert {finding["source"] for finding in findings} == {f"{ticker.lower()}.md"}
        assert all(
            f"[{finding['number']}] {ticker.lower()}.md, chunk `{finding['id']}`" in report["markdown"]
            for finding in findings
        )
    assert "Redmond, Washington" in " ".join(finding["text"] for finding in reports["MSFT"]["findings"])


def test_its_commentary_comes_from_the_generator_and_holds_no_figures(reports, stack):
    status, models = stack["generator"].get_json("/v1/models")
    for report in reports.values():
        commentary = report["commentary"]
        assert commentary["via"] == "rag-generator" and commentary["model"] == models["data"][0]["id"]
        assert not re.search(r"\d", commentary["text"])


def test_it_writes_commentary_with_any_openai_compatible_chat_endpoint(run_template, stack):
    # The text-generator also speaks /v1/chat/completions, so it stands in for a hosted LLM here.
    with run_template(
        "stock-research-agent", env={"RAG_URL": stack["rag"].url, "LLM_URL": stack["generator"].url}
    ) as agent:
        status, body = agent.post_json("/v1/report", {"ticker": "ibm"})
    assert status == 200, body
    assert body["ticker"] == "IBM" and body["commentary"]["via"] == "llm"
    assert "via an OpenAI-compatible LLM endpoint" in body["markdown"]
    assert not re.search(r"\d", body["commentary"]["text"])


def test_an_unknown_ticker_gets_a_clear_error_listing_the_known_ones(agent):
    status, body = agent.post_json("/v1/report", {"ticker": "TSLA"})
    assert status == 404
    assert body["error"]["message"] == "unknown ticker TSLA: this agent has price data for AAPL, AMZN, GOOG, IBM, MSFT"


@pytest.mark.parametrize("ticker", ["", "DROP TABLE", "../etc", "TOOLONG", 42])
def test_a_malformed_ticker_is_rejected(agent, ticker):
    status, body = agent.post_json("/v1/report", {"ticker": ticker})
    assert status == 422
    assert "1 to 5 letters" in body["error"]["message"]


def test_it_lists_its_tickers(agent):
    status, body = agent.get_json("/v1/tickers")
    assert status == 200
    assert [item["ticker"] for item in body["tickers"]] == KNOWN_TICKERS
    assert body["tickers"][2] == {
        "ticker": "GOOG",
        "company": "Google Inc.",
        "first": "2004-08-01",
        "last": "2010-03-01",
        "months": 68,
    }
