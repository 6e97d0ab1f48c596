//! (in progress) `phase` tool subcommands, see issues 4 and 5.
