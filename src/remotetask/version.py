"""The version of remotetask (read by setup.py; recorded in the worker
registry and the embedded server's discovery file, where processes of
different versions refuse to share a database)."""
VERSION = '1.0.0.dev0'
