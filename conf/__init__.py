"""arus.conf: the configuration shipped inside the package (arus.toml, the log4j2 files).

This folder is installed as the package data `arus.conf`, so an installed arus finds its defaults
and log4j2 files without a checkout (arus.config finds the config; see its docstring).
"""
