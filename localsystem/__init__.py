"""localsystem: the composition root of `make run`.

The only package that knows all the others: it reads the registry of every setting
(`localsystem.settings`), plans the local system's processes (localflux's stand-ins, the
simulator, Mage) and supervises them (`python -m localsystem`).
"""
