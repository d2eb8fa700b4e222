"""The ``local`` source module: files of a local or mounted folder."""
