"""The course's minimal producer: send one JSON dict to a topic, then flush.

This is the kafka-python sample the practicum starts from (a JSON value serializer, ``send`` then
``flush``), kept as it is so students can compare it with what ``arus produce`` adds (keys, acks,
idempotence, pacing, dead letters). Run it against the local broker:

    python samples/producer_minimal.py course.samples

The broker is ``$KAFKA_BOOTSTRAP_SERVERS`` (as for arus), else 127.0.0.1:9092. The topic must exist
(``arus topics create course.samples``); read the record back with
``python samples/consumer_minimal.py course.samples`` or ``arus tail course.samples --from-beginning``.
"""

import json
import os
import sys

from kafka import KafkaProducer

topic = sys.argv[1] if len(sys.argv) > 1 else "course.samples"

producer = KafkaProducer(
    bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    value_serializer=lambda v: json.dumps(v).encode("utf-8"),
)

producer.send(topic, {"sensor_id": 1, "temperature": 30.5, "humidity": 70})
producer.flush()
print(f"sent 1 record to {topic}")
