"""lyre's command line: a Typer app that parses, calls the library, prints."""
