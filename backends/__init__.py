"""mastctl's built-in backends (installed as ``mastctl.backends``), one file each."""
