"""`python -m edgediff ...`: the same console entry point as the `edgediff` command."""

from edgediff.cli import main

if __name__ == "__main__":
    main()
