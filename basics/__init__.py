"""The bottom layer: errors a user can fix, atomic writes, progress, provenance and declared options.

Imports nothing of lyre; every other package may import it.
"""
