"""xplenty-archiver: keep the whole history of Xplenty jobs in your own SQL database."""

__version__ = "0.1.0"
