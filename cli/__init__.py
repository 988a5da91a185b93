"""The `fruits` command line: one module per subcommand, composed in cli.main."""
