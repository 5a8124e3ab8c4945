"""Batch rows for the cost and economy tests: ``n`` rows, of which only ``distinct`` differ."""


def question_rows(n: int, distinct: int | None = None, prefix: str = "q", op: str = "plus") -> list[dict]:
    distinct = distinct or n
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"What is {i % distinct} {op} {i % distinct}?"}}
            for i in range(n)]
