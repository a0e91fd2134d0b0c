"""One module per subcommand, each exposing `command` (a click.Command). Registered in slimserve.cli."""
