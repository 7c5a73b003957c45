"""The documentation site: an MkDocs plugin that writes pages from the catalog."""
