"""How the rules are applied: prompt templates, the critique loop, the judge, the CLI."""
