"""Running Spark jobs: the session, progress lines, guards, and the streaming queries with their writers.

    job         what every job's main does first: settle its settings or refuse; the exit codes
    session     the one Spark session factory, and a job's timed run on it
    progress    a line per micro-batch, a summary per query
    guards      checks before Spark starts, kill points for the fault tests
    microbatch  what a micro-batch read (from its checkpoint); writes safe to replay
    writers     the foreachBatch writers, given sink specs (DeltaSink, DeadLetterSink, LateOutput)
    queries     the aggregate and alerts queries: their specs, preflight, start, trigger
    pipeline    the multi-topic pipeline's stages and the order they run in
    show        what a job prints at the end with --show

Writers take explicit sink specs (paths, topics, transaction app ids), never another job's settings.
May import: arus.config, arus.signals (graceful stop while queries run), arus.core, arus.io.
"""
