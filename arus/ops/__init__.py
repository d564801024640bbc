"""Operations: run the local services and look inside them.

    broker      the local Kafka broker, the 3-broker cluster and the SASL broker (arus broker)
    standalone  the Spark standalone cluster on this machine (arus cluster)
    processes   daemons by PID, trusted only when the command line is the one arus started
    topics      [[topics]] created at start-up; list, describe, create, alter (arus topics)
    tail        print a topic's records (arus tail)
    send        send JSON lines, each acknowledged (arus send)
    lag         lag of every consumer group and every Spark checkpoint (arus lag)
    dashboard   a live local web page of lag, rates and the gold windows (arus dashboard)
    notebooks   run the notebooks headless (arus notebooks)

May import: arus.config, arus.core, arus.io.
"""
