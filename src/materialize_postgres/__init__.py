"""materialize-postgres: keep PostgreSQL tables exactly in sync with keyed streams of JSON documents."""

__version__ = "0.1.0"
