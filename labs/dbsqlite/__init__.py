"""The site's SQLite backend (base.py): Django's, with writers taking turns."""
