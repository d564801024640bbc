"""The course's minimal consumer: print the value of every record of a topic.

This is the kafka-python sample the practicum starts from (a JSON value deserializer, a loop
printing ``message.value``), kept as it is so students can compare it with what ``arus consume``
adds (a consumer group, commits after output, windows, a watermark, dead letters). Run it
against the local broker:

    python samples/consumer_minimal.py course.samples

It reads from the earliest offset and runs until Ctrl-C; pass a second argument (seconds) to stop
after that long without records: ``python samples/consumer_minimal.py course.samples 5``. The
broker is ``$KAFKA_BOOTSTRAP_SERVERS`` (as for arus), else 127.0.0.1:9092. Unlike the course's original it
reads in the consumer group ``course-samples``, which commits what it read when it stops, so
``arus check lab2`` can see that it ran.
"""

import json
import os
import sys

from kafka import KafkaConsumer

topic = sys.argv[1] if len(sys.argv) > 1 else "course.samples"
idle_ms = int(float(sys.argv[2]) * 1000) if len(sys.argv) > 2 else float("inf")

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    group_id="course-samples",  # so `arus check lab2` sees what it read: it commits when it stops
    auto_offset_reset="earliest",
    value_deserializer=lambda v: json.loads(v.decode("utf-8")),
    consumer_timeout_ms=idle_ms,
)

try:
    for message in consumer:
        print(message.value)
except KeyboardInterrupt:
    pass
finally:
    consumer.close()
