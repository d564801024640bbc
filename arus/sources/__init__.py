"""Producers: pure, seeded event generators, and the one way they are run and sent to Kafka.

    base.py         Source (start / stop / run), the flags every producer takes, launch()
    send.py         SendLoop (pacing, bounds, progress, flush), Record, ids, headers, event times
    iot.py          IotSimulator: the sensor fleet, its faults and delivery problems
    csv_replay.py   CsvReplay: any CSV file, in file order, resumable from its cursor
    api_poller.py   ApiPoller: a JSON HTTP API, each record published once

Their entry points, with the flags, are producers/*.py (`arus produce iot|csv|api`).

May import: arus.config, arus.signals, arus.core.rules, arus.io.
"""
