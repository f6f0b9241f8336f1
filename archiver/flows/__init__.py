"""Flows: what a command does, step by step, over the client, the parser and the store.

One module per flow: runs (the frame every sync shares and the one fetch loop),
by_id, incremental, ingest, report, demo. A new command gets a module here and a
dozen lines in archiver.cli.
"""
