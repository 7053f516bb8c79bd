"""Importers from other mail systems: read the source into a plan, report it, apply it.

vpopmail.py reads a vpopmail installation (vpasswd files or MySQL rows) into a Plan of
pure dataclasses; mysqldump.py parses dump text for it; apply.py applies a Plan to the
directory and copies the Maildirs.  No importer ever writes to its source.
"""
