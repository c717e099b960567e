"""Database: engine, models, migrations."""
