"""arus benchmarks: producers, consumers, the Spark ladder, end to end and growth (`make bench`).

Never timed unit tests: `arus bench run` measures on a real broker and writes JSON to
bench/results/; `arus bench report` turns one result file into docs/benchmarks.md.
"""
