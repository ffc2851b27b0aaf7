"""``python -m ovdiv`` = the ``ovdiv`` command."""

from ovdiv.cli import main

if __name__ == "__main__":
    main()
