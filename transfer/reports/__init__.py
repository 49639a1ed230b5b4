"""Reports from the store: tables, figures, Markdown/HTML/CSV."""
