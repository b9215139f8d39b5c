from edgeq.cli import entry

entry()
