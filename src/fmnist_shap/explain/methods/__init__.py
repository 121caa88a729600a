"""One module a family of attribution methods, each class listed in `registry.METHODS`.

A new method is a new file here (dvc.yaml's explain and global stages depend on this whole
folder, so nothing else needs listing) and one line in the registry: docs/development.md.
"""
