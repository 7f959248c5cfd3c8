"""`python -m mineru_fit`: the `mineru-fit` command where no console script is installed
(e.g. run from a source tree on PYTHONPATH, as `make gpu` does on a machine without pip access)."""

from mineru_fit.cli import main

if __name__ == "__main__":
    main()
