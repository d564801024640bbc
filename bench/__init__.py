"""arus benchmarks: producers, consumers, the Spark ladder, end to end and growth (`make bench`).

Never timed unit tests: `python -m bench.run` measures on a real broker and writes JSON to
bench/results/; `python -m bench.report` turns one result file into docs/benchmarks.md.
"""
