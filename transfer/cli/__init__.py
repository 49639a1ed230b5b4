"""The thin `transfer` command: option parsing, terminal tables, `inspect`."""
