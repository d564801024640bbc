"""Running Spark jobs: the session, progress lines, guards, triggers and the foreachBatch writers.

Writers take explicit sink specs (paths, topics, ids), never another job's settings.
May import: arus.config, arus.core, arus.io.
"""
