"""producers/formatting.py: the texts `tidyq jobs` and the jobs page show for a job's numbers."""

from producers.formatting import age_text, cost_text, errors_text, rate_text, started_text, target_text


def test_numbers_read_the_same_everywhere():
    assert [age_text(s) for s in (None, 5, 119.4, 120, 7199, 7200, 36000)] == ["-", "5s", "119s", "2m", "120m",
                                                                               "2.0h", "10.0h"]
    assert cost_text(None) == "-" and cost_text(0.01234) == "$0.0123"
    assert rate_text(None) == "-" and rate_text(1234.56) == "1,234.6"
    assert started_text(None) == "-" and started_text(0) == "-" and started_text(86400.5) == "1970-01-02 00:00:00"
    assert target_text("direct", "openai/x") == "direct:openai/x" and target_text("mock", None) == "mock"
    assert target_text(None, None) == "-"
    assert errors_text({}) == ""
    assert errors_text({"A": 3, "B": 2, "C": 1, "D": 1}) == "A 3, B 2, C 1 (+1 more)"
