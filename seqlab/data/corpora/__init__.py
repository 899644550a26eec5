"""Preparers for the built-in corpora (see DATA.md): download, clean, split, cache."""
